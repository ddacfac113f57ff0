"""Live work goes ahead of a queued backlog, all the way to full depth, on the real services: the
backlog's messages are sent at DOCTRIAGE_BACKLOG_PRIORITY, each step's follow-up messages keep
the priority of the message that started it, and a Celery worker (subprocess) serves every live
message, its full-depth pass included, before the backlog's. PostgreSQL a fresh database, Redis
a claimed spare DB number."""

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

from db.models import Document, Page, Prediction
from db.session import make_engine, session_factory, session_scope
from doctriage.cli import app

pytestmark = [pytest.mark.services]

pg_url = services.pg_url_fixture("doctriage_priority")
redis_url = services.redis_url_fixture()
PRIORITY = 6


def _copy(short_docs: Path, folder: Path, docs: tuple) -> Path:  # type: ignore[type-arg]
    folder.mkdir()
    for doc in docs:
        shutil.copy(short_docs / doc.name, folder / doc.name)
    return folder


def _depths(broker: redis.Redis, queue: str) -> tuple[int, int]:
    """Messages waiting in `queue` at live priority (0) and at the backlog's."""
    return int(broker.llen(queue)), int(broker.llen(services.priority_list(queue, PRIORITY)))


def _prediction_order(url: str, live: Path) -> list[tuple[bool, str]]:
    """(from the live folder?, pass) of every prediction, in the order they were written."""
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as s:
        rows = s.execute(
            select(Document.source_uri, Prediction.pass_name)
            .join(Page, Page.id == Prediction.page_id)
            .join(Document, Document.id == Page.document_id)
            .order_by(Prediction.id)).all()
    engine.dispose()
    return [(f"/{live.name}/" in uri, pass_name) for uri, pass_name in rows]


@pytest.fixture
def stores(pg_url: str, redis_url: str) -> tuple[str, str]:
    """The test's PostgreSQL database and Redis DB."""
    return pg_url, redis_url


def test_a_live_drop_is_served_before_a_queued_backlog_to_full_depth(
    short_docs: Path, tiny_bundle: Path, stores: tuple[str, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pg_url, redis_url = stores
    # Every page goes to full depth (reroute below 1.0): the full-depth pass is part of the order.
    env = services.worker_env(tmp_path / "home", pg_url, redis_url, tiny_bundle, max_batch="4",
                     reroute_below="1.01", backlog_priority=str(PRIORITY),
                     pressure_budget="0", reconcile_every_s="3600")
    services.use_settings(monkeypatch, env)
    broker = redis.Redis.from_url(redis_url)
    backlog = _copy(short_docs, tmp_path / "backlog", PDFS[:3])
    live = _copy(short_docs, tmp_path / "live", PDFS[3:])
    logs = {"ingest": tmp_path / "ingest.log", "classify": tmp_path / "classify.log"}
    procs: dict[str, subprocess.Popen] = {}
    try:
        # The backlog first, then the live drop: both wait in Redis (no worker yet).
        result = CliRunner().invoke(app, ["backlog", str(backlog), "--json"])
        assert result.exit_code == 0, result.output
        assert CliRunner().invoke(app, ["submit", str(live)]).exit_code == 0
        assert _depths(broker, "ingest") == (len(PDFS) - 3, 3)

        procs["ingest"] = services.start_doctriage(["worker", "--queues", "ingest", "-c", "1"], env,
                                          logs["ingest"])
        # Each ingest sends its document's classify message (<= 4 pages: one) at the priority
        # of its own message.
        services.wait_for(lambda: sum(_depths(broker, "classify")) == len(PDFS), 90,
                          "every document ingested", logs)
        assert _depths(broker, "classify") == (len(PDFS) - 3, 3)

        procs["classify"] = services.start_doctriage(
            ["worker", "--queues", "classify,full_depth", "-c", "1"], env, logs["classify"])
        services.wait_until_final(pg_url, procs, logs, timeout_s=120, count=len(PDFS))
    finally:
        for proc in procs.values():
            services.stop_process(proc)

    live_pages = sum(d.pages for d in PDFS[3:])
    backlog_pages = sum(d.pages for d in PDFS[:3])
    order = _prediction_order(pg_url, live)
    assert len(order) == 2 * (live_pages + backlog_pages)  # an early and a full answer each
    # Every live answer, full depth included, was written before the first backlog answer.
    assert order[: 2 * live_pages] == [(True, "early")] * live_pages + [(True, "full")] * live_pages
    assert {uri_is_live for uri_is_live, _ in order[2 * live_pages:]} == {False}
