"""The distributed path on the real services: PostgreSQL (a fresh database), Redis (a spare DB
number), an ingest worker and a classify worker as subprocesses, short generated documents
(synthkit) submitted with `doctriage submit`. Then the same documents through `doctriage run`:
the same labels."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from servicekit import (
    pg_url_fixture,
    redis_url_fixture,
    start_doctriage,
    stop_process,
    use_settings,
    wait_until_final,
    worker_env,
)
from sqlalchemy import select
from synthkit import PAGES
from typer.testing import CliRunner

from db.models import Document, Page, Prediction
from db.session import make_engine, session_factory, session_scope
from doctriage.cli import app
from doctriage.settings import get_settings

pytestmark = pytest.mark.services

TIMEOUT_S = 120

pg_url = pg_url_fixture("doctriage_wf")
redis_url = redis_url_fixture()


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
    env = worker_env(tmp_path / "home", pg_url, redis_url, tiny_bundle, reroute_below="0.75",
                     audit_fraction="0.2", max_batch="4")
    use_settings(monkeypatch, env)
    logs = {"ingest": tmp_path / "ingest.log", "classify": tmp_path / "classify.log"}
    procs: dict[str, subprocess.Popen] = {}
    try:
        # ingest and deferred OCR share one prefork worker (the scan's page is OCRed there)
        procs["ingest"] = start_doctriage(["worker", "--queues", "ingest,ocr", "-c", "1"], env,
                                          logs["ingest"])
        procs["classify"] = start_doctriage(
            ["worker", "--queues", "classify,full_depth", "-c", "2"], env, logs["classify"])
        result = CliRunner().invoke(app, ["submit", str(short_docs)])
        assert result.exit_code == 0, result.output
        assert "6 new, 6 queued" in result.output
        # Submitting again registers nothing new.
        again = CliRunner().invoke(app, ["submit", str(short_docs)])
        assert "0 new" in again.output

        states = wait_until_final(pg_url, procs, logs, timeout_s=TIMEOUT_S)
        engine = make_engine(pg_url)
        sessions = session_factory(engine)
        with session_scope(sessions) as s:
            pages = list(s.execute(select(Page)).scalars())
            preds = list(s.execute(select(Prediction)).scalars())
        engine.dispose()
        assert states == ["DONE"] * 6
        assert len(pages) == PAGES == 8 and {p.state for p in pages} == {"DONE"}
        early = [p for p in preds if p.pass_name == "early"]
        full = [p for p in preds if p.pass_name == "full"]
        assert sorted(p.page_id for p in early) == sorted(p.id for p in pages)  # once each
        assert len({p.page_id for p in full}) == len(full) > 0
        for p in early:
            assert 0 <= p.exit_stage <= 4 and 0 < p.confidence <= 1
            assert len(p.trail) == p.exit_stage + 1
        # the tiny bundle has no OCR-free exit: the scan was OCRed by the ocr queue
        assert sorted(p.text_source for p in pages).count("ocr") == 1
        for p in full:
            assert p.exit_stage == 4 and p.exit_layer == 4
            # why it ran, and what every exit answered on the way (the audit's replay data)
            assert p.full_depth_reason in {"low_confidence", "audit_sample"}
            assert [lab for lab, _ in p.exit_answers][-1] == p.label and len(p.exit_answers) == 5

        status = CliRunner().invoke(app, ["status", "--json"])
        counts = json.loads(status.stdout)
        assert counts["pages"]["DONE"] == 8 and counts["documents"]["DONE"] == 6
        distributed = _labels(pg_url)
    finally:
        for p in procs.values():
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
