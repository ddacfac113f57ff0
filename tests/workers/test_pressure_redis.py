"""Load-adaptive exits on the real services: a classify worker (subprocess) that finds its Redis
classify queue deeper than DOCTRIAGE_PRESSURE_QUEUE_DEPTH decides with the bundle's pressure
policy (its answers record the `+pressure` version), and with the normal one once the queue is
shallow again. PostgreSQL a fresh database, Redis a claimed spare DB number."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import redis
import servicekit as services
from sqlalchemy import select
from synthkit import PDFS
from typer.testing import CliRunner

from classifier.bundle import load_bundle, save_bundle
from classifier.policy import MaxSoftmax, policy_version
from db.models import Document, Page, Prediction
from db.session import make_engine, session_factory, session_scope
from doctriage.cli import app

pytestmark = [pytest.mark.services, pytest.mark.slow]

pg_url = services.pg_url_fixture("doctriage_pressure")
redis_url = services.redis_url_fixture()
BOUND = 10
FILLERS = 20  # classify messages for pages that do not exist: they only make the queue deep


def _pdfs(short_docs: Path, folder: Path) -> Path:
    folder.mkdir()
    for doc in PDFS:
        shutil.copy(short_docs / doc.name, folder / doc.name)
    return folder


def _early_versions(url: str, folder: Path) -> list[str]:
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as s:
        rows = s.execute(
            select(Prediction.policy_version)
            .join(Page, Page.id == Prediction.page_id)
            .join(Document, Document.id == Page.document_id)
            .where(Prediction.pass_name == "early",
                   Document.source_uri.like(f"%{folder.name}/%"))
        ).scalars().all()
    engine.dispose()
    return list(rows)


def test_a_deep_classify_queue_switches_the_worker_to_the_pressure_policy(
    short_docs: Path, tiny_bundle: Path, pg_url: str, redis_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = load_bundle(tiny_bundle)
    spec = MaxSoftmax.global_threshold(model.num_stages, 0.0).to_json()
    model.pressure = {"policy": spec, "budget": 0.02}
    bundle = save_bundle(model, tmp_path / "bundle")
    normal = policy_version(model.version, model.policy_spec)
    pressure = policy_version(model.version, spec, pressure=True)

    env = services.worker_env(tmp_path / "home", pg_url, redis_url, bundle, max_batch="4",
                     pressure_queue_depth=str(BOUND), pressure_poll_s="0",
                     reconcile_every_s="3600")
    services.use_settings(monkeypatch, env)
    broker = redis.Redis.from_url(redis_url)
    logs = {"ingest": tmp_path / "ingest.log", "classify": tmp_path / "classify.log"}
    procs: dict[str, subprocess.Popen] = {}
    first, second = _pdfs(short_docs, tmp_path / "first"), _pdfs(short_docs, tmp_path / "second")
    try:
        procs["ingest"] = services.start_doctriage(["worker", "--queues", "ingest", "-c", "1"], env,
                                          logs["ingest"])
        assert CliRunner().invoke(app, ["submit", str(first)]).exit_code == 0
        # Every document ingested, its pages' classify messages waiting (no classify worker yet).
        services.wait_for(lambda: broker.llen("classify") == len(PDFS), 90,
                          "the first classify messages", logs)
        from workers.tasks import classify

        for i in range(FILLERS):  # behind the real pages: the queue is deep when they are read
            classify.delay([10**9 + i])
        procs["classify"] = services.start_doctriage(
            ["worker", "--queues", "classify,full_depth", "-c", "1"], env, logs["classify"])
        services.wait_until_final(pg_url, procs, logs, timeout_s=120, count=len(PDFS))
        under = _early_versions(pg_url, first)
        assert under and set(under) == {pressure}, under

        services.wait_for(lambda: broker.llen("classify") == 0, 60, "the fillers to drain", logs)
        assert CliRunner().invoke(app, ["submit", str(second)]).exit_code == 0
        services.wait_until_final(pg_url, procs, logs, timeout_s=120, count=2 * len(PDFS))
        after = _early_versions(pg_url, second)
        assert after and set(after) == {normal}, after
        assert "backlog pressure on" in logs["classify"].read_text()
    finally:
        for proc in procs.values():
            services.stop_process(proc)
