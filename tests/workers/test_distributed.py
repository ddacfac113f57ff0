"""The distributed path on the real services: PostgreSQL (a fresh database), Redis (a spare DB
number), an ingest worker and a classify worker as subprocesses, real documents submitted with
`doctriage submit`. Then the same documents through `doctriage run`: the same labels."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servicekit import fresh_pg_database, spare_redis_db, start_doctriage, stop_process
from sqlalchemy import select
from typer.testing import CliRunner

from db.models import Document, Page, Prediction
from db.session import make_engine, session_factory, session_scope
from doctriage.cli import app
from doctriage.settings import get_settings

pytestmark = pytest.mark.services

TIMEOUT_S = 120


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_pg_database("doctriage_wf") as url:
        yield url


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with spare_redis_db() as url:
        yield url


def _labels(url: str) -> dict[tuple[str, int], str]:
    """Final label per (file name, page number): full-depth pass if any, else early."""
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as s:
        rows = s.execute(
            select(Document.source_uri, Page.number, Prediction.pass_name, Prediction.label)
            .join(Page, Page.document_id == Document.id)
            .join(Prediction, Prediction.page_id == Page.id)
        ).all()
    engine.dispose()
    out: dict[tuple[str, int], str] = {}
    for uri, number, _pass, label in sorted(rows, key=lambda r: r[2] == "full"):
        out[(uri.rsplit("/", 1)[-1], number)] = label
    return out


def test_workers_classify_submitted_documents(
    short_docs: Path, tiny_bundle: Path, pg_url: str, redis_url: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        **os.environ,
        "DOCTRIAGE_HOME": str(tmp_path / "home"),
        "DOCTRIAGE_DATABASE_URL": pg_url,
        "DOCTRIAGE_BROKER_URL": redis_url,
        "DOCTRIAGE_MODEL_DIR": str(tiny_bundle),
        "DOCTRIAGE_REROUTE_BELOW": "0.75",
        "DOCTRIAGE_AUDIT_FRACTION": "0.2",
        "DOCTRIAGE_MAX_BATCH": "4",
        "OMP_THREAD_LIMIT": "1",
    }
    for key, value in env.items():
        if key.startswith("DOCTRIAGE_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    procs = []
    try:
        procs.append(start_doctriage(["worker", "--queues", "ingest", "-c", "1"], env,
                                     tmp_path / "ingest.log"))
        procs.append(start_doctriage(["worker", "--queues", "classify,full_depth", "-c", "2"],
                                     env, tmp_path / "classify.log"))
        result = CliRunner().invoke(app, ["submit", str(short_docs)])
        assert result.exit_code == 0, result.output
        assert "6 new, 6 queued" in result.output
        # Submitting again registers nothing new.
        again = CliRunner().invoke(app, ["submit", str(short_docs)])
        assert "0 new" in again.output

        engine = make_engine(pg_url)
        sessions = session_factory(engine)
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            with session_scope(sessions) as s:
                states = [d.state for d in s.execute(select(Document)).scalars()]
            if states and all(st in ("DONE", "FAILED") for st in states):
                break
            for p in procs:
                assert p.poll() is None, (tmp_path / "classify.log").read_text()[-3000:]
            if time.monotonic() > deadline:
                logs = "".join((tmp_path / n).read_text(errors="replace")[-2000:]
                               for n in ("ingest.log", "classify.log"))
                pytest.fail(f"documents not finished in {TIMEOUT_S}s: {states}\n{logs}")
            time.sleep(0.5)

        with session_scope(sessions) as s:
            pages = list(s.execute(select(Page)).scalars())
            preds = list(s.execute(select(Prediction)).scalars())
        engine.dispose()
        assert states == ["DONE"] * 6
        assert len(pages) == 8 and {p.state for p in pages} == {"DONE"}
        early = [p for p in preds if p.pass_name == "early"]
        full = [p for p in preds if p.pass_name == "full"]
        assert sorted(p.page_id for p in early) == sorted(p.id for p in pages)  # once each
        assert len({p.page_id for p in full}) == len(full) > 0
        for p in early:
            assert 0 <= p.exit_stage <= 4 and 0 < p.confidence <= 1
            assert len(p.trail) == p.exit_stage + 1
        for p in full:
            assert p.exit_stage == 4 and p.exit_layer == 4

        status = CliRunner().invoke(app, ["status", "--json"])
        counts = json.loads(status.stdout)
        assert counts["pages"]["DONE"] == 8 and counts["documents"]["DONE"] == 6
        distributed = _labels(pg_url)
    finally:
        for p in procs:
            stop_process(p)

    # The embedded runner on the same documents and model stores the same labels.
    home = tmp_path / "embedded"
    monkeypatch.setenv("DOCTRIAGE_HOME", str(home))
    monkeypatch.delenv("DOCTRIAGE_DATABASE_URL")
    monkeypatch.delenv("DOCTRIAGE_BROKER_URL")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["run", str(short_docs), "--json"])
    assert result.exit_code == 0, result.output
    embedded = _labels(f"sqlite:///{home / 'doctriage.db'}")
    assert embedded == distributed
