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


def _text_sources(url: str) -> dict[tuple[str, int], str]:
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as s:
        rows = s.execute(select(Document.source_uri, Page.number, Page.text_source)
                         .join(Page, Page.document_id == Document.id)).all()
    engine.dispose()
    return {(uri.rsplit("/", 1)[-1], number): src for uri, number, src in rows}


def _ocr_free_confidences(url: str) -> list[float]:
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as s:
        conf = list(s.execute(select(Prediction.confidence)
                              .where(Prediction.ocr_free.is_(True))).scalars())
    engine.dispose()
    return sorted(conf)


def _run_embedded(folder: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DOCTRIAGE_HOME", str(home))
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["run", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    return f"sqlite:///{home / 'doctriage.db'}"


@pytest.mark.slow
def test_distributed_run_avoids_ocr_for_the_same_pages_as_the_embedded_one(
    tiny_bundle: Path, pg_url: str, redis_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deferred OCR with an OCR-free exit (the tiny bundle's, given a threshold between its
    confidences on these scans): ingest + ocr + classify workers answer the same pages without
    OCR as `doctriage run` does, and OCR the others."""
    import shutil

    from synthkit import scanned_pdf

    docs = tmp_path / "scans"
    docs.mkdir()
    for i, (label, n) in enumerate([("letter", 2), ("memo", 1), ("invoice", 2), ("form", 1),
                                    ("resume", 1), ("email", 1)]):
        (docs / f"scan-{i}-{label}.pdf").write_bytes(scanned_pdf(label, n, "same-share"))
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    exits = json.loads((bundle / "exits.json").read_text())

    def with_threshold(t: float) -> None:
        exits["ocr_free"] = {"temperature": 1.0, "threshold": t}
        (bundle / "exits.json").write_text(json.dumps(exits))

    for key in ("DOCTRIAGE_DATABASE_URL", "DOCTRIAGE_BROKER_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DOCTRIAGE_MODEL_DIR", str(bundle))
    monkeypatch.setenv("DOCTRIAGE_REROUTE_BELOW", "0")
    monkeypatch.setenv("DOCTRIAGE_AUDIT_FRACTION", "0")
    with_threshold(0.0)  # every page answers: its OCR-free confidence is stored
    conf = _ocr_free_confidences(_run_embedded(docs, tmp_path / "probe", monkeypatch))
    assert len(conf) == 8
    with_threshold((conf[3] + conf[4]) / 2)  # half of the pages exit
    assert conf[4] - conf[3] > 1e-4  # far from float noise between batchings
    embedded = _text_sources(_run_embedded(docs, tmp_path / "embedded", monkeypatch))
    assert sorted(embedded.values()) == ["ocr"] * 4 + ["ocr_avoided"] * 4

    env = worker_env(tmp_path / "home", pg_url, redis_url, bundle, reroute_below="0",
                     audit_fraction="0", max_batch="4")
    use_settings(monkeypatch, env)
    logs = {q: tmp_path / f"{q}.log" for q in ("ingest", "ocr", "classify")}
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["ingest"] = start_doctriage(["worker", "--queues", "ingest", "-c", "1"], env,
                                          logs["ingest"])
        procs["ocr"] = start_doctriage(["worker", "--queues", "ocr", "-c", "1"], env, logs["ocr"])
        procs["classify"] = start_doctriage(
            ["worker", "--queues", "classify,full_depth", "-c", "1"], env, logs["classify"])
        result = CliRunner().invoke(app, ["submit", str(docs)])
        assert result.exit_code == 0, result.output
        assert wait_until_final(pg_url, procs, logs, timeout_s=TIMEOUT_S) == ["DONE"] * 6
    finally:
        for p in procs.values():
            stop_process(p)
    assert _text_sources(pg_url) == embedded
