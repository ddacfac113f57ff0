"""`doctriage run` end to end: short generated documents (synthkit), the tiny model, the SQLite
store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select
from synthkit import ONE_PAGE_PDF, PAGES
from typer.testing import CliRunner

from db.models import Document, Page, Prediction
from db.session import session_scope
from doctriage import wiring
from doctriage.cli import app
from doctriage.settings import get_settings
from workers.steps import RerouteOptions, needs_full_depth

runner = CliRunner()


def _run(*args: str) -> tuple[int, dict, str]:
    result = runner.invoke(app, ["run", *args])
    try:
        # 1 is a finished run with failed documents: its JSON is printed all the same
        payload = json.loads(result.stdout) if "--json" in args and result.exit_code < 2 else {}
    except json.JSONDecodeError:
        payload = {}
    return result.exit_code, payload, result.stdout + result.stderr


@pytest.fixture
def reroute_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Re-route a good share of pages so both passes are exercised.
    monkeypatch.setenv("DOCTRIAGE_REROUTE_BELOW", "0.75")
    monkeypatch.setenv("DOCTRIAGE_AUDIT_FRACTION", "0.2")
    monkeypatch.setenv("DOCTRIAGE_MAX_BATCH", "4")
    get_settings.cache_clear()


def test_run_classifies_every_page_and_records_bad_documents(
    short_docs: Path, bad_doc: Path, tiny_bundle: Path, reroute_env: None
) -> None:
    code, summary, out = _run(str(short_docs), str(bad_doc), "--model", str(tiny_bundle), "--json")
    assert code == 1, out  # a document failed
    assert summary["documents"] == 7
    assert summary["documents_by_state"] == {"DONE": 6, "FAILED": 1}
    assert summary["failed_documents"][0]["error"].startswith("broken.pdf: ")
    assert summary["pages"] == PAGES == 8  # 1 + 2 + 1 + 2 + 1 + 1 pages
    assert sum(summary["pages_per_class"].values()) == 8
    assert sum(summary["exit_stage_histogram"].values()) == 8
    assert 0 < summary["mean_confidence"] <= 1
    assert summary["pages_per_s"] > 0
    # the run's own CPU (threads + tesseract), not the process's since start-up
    assert 0 < summary["cpu_seconds"] <= summary["seconds"] * (os.cpu_count() or 1) + 0.5
    assert summary["completed"] is True

    sessions = wiring.store(get_settings())
    with session_scope(sessions) as s:
        pages = list(s.execute(select(Page)).scalars())
        preds = list(s.execute(select(Prediction)).scalars())
    assert {p.state for p in pages} == {"DONE"}
    early = {p.page_id: p for p in preds if p.pass_name == "early"}
    full = {p.page_id: p for p in preds if p.pass_name == "full"}
    assert set(early) == {p.id for p in pages}
    assert len(full) == summary["pages_rerouted"] > 0
    for f in full.values():
        assert f.exit_stage == 4 and f.exit_layer == 4  # all layers
    bar = RerouteOptions(0.75, 0.2)
    for page_id, e in early.items():  # re-routed exactly when unsure or audit-sampled
        assert (page_id in full) == needs_full_depth(page_id, e.confidence, bar)
    for e in early.values():
        assert 0 <= e.exit_stage <= 4 and len(e.trail) == e.exit_stage + 1
        assert e.latency_ms is not None

    # The same run again: nothing new is written, nothing duplicated.
    code, again, out = _run(str(short_docs), str(bad_doc), "--model", str(tiny_bundle), "--json",
                            "--allow-failures")
    assert code == 0, out
    assert again["pages_classified_this_run"] == 0
    assert again["documents_already_classified"] == 7
    with session_scope(sessions) as s:
        assert s.execute(select(func.count()).select_from(Prediction)).scalar() == len(preds)
        assert s.execute(select(func.count()).select_from(Document)).scalar() == 7
        text_sources = set(s.execute(select(Page.text_source)).scalars())
    assert text_sources == {"text_layer", "ocr"}  # born-digital and scanned pages both went through
    assert again["pages_per_class"] == summary["pages_per_class"]


def test_run_human_summary(short_docs: Path, tiny_bundle: Path) -> None:
    code, _, out = _run(str(short_docs / ONE_PAGE_PDF),
                        "--model", str(tiny_bundle))
    assert code == 0, out
    assert "documents: 1" in out and "pages: 1" in out and "pages/s:" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent/folder"], "no such file or folder"),
        (["MODEL_OK_EMPTY_DIR"], "no documents found"),
        (["DOC", "--model", "/nonexistent/model"], "/nonexistent/model: no such model folder"),
    ],
)
def test_unusable_arguments_exit_2(
    args: list[str], message: str, tmp_path: Path, short_docs: Path, tiny_bundle: Path
) -> None:
    doc = str(short_docs / ONE_PAGE_PDF)
    args = [doc if a == "DOC" else str(tmp_path) if a == "MODEL_OK_EMPTY_DIR" else a for a in args]
    if "--model" not in args:
        args += ["--model", str(tiny_bundle)]
    code, _, out = _run(*args)
    assert code == 2
    assert message in out
    assert "Traceback" not in out
