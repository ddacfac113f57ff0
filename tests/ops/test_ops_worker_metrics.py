"""The Prometheus endpoint of real workers: an ingest worker (prefork, two children: its figures
reach the endpoint through the multiprocess files) and a classify worker (threads), both
`doctriage worker` subprocesses on the real Redis and PostgreSQL. Scraped before and after short
generated documents (synthkit) and a broken one went through; the figures must match what the
store holds."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from servicekit import start_doctriage, stop_process, use_settings, wait_until_final, worker_env
from sqlalchemy import select
from synthkit import ONE_PAGE_PDF, SCAN_PNG, TWO_PAGE_PDF
from typer.testing import CliRunner

from db.models import Document, Page, Prediction
from db.session import make_engine, session_factory, session_scope
from doctriage.cli import app

pytestmark = pytest.mark.services

TIMEOUT_S = 150
DOCS = [ONE_PAGE_PDF, TWO_PAGE_PDF, SCAN_PNG]  # text layer and one scan (OCR); 4 pages in all


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def by_label(samples: dict, name: str, label: str, **labels: str) -> dict[str, float]:
    out: Counter[str] = Counter()
    want = set(labels.items())
    for (n, lab), v in samples.items():
        if n == name and want <= set(lab) and v:
            out[dict(lab)[label]] += v
    return dict(out)


def _wait_up(port: int, proc: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + 60
    while True:
        try:
            return scrape(port)
        except OSError:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "metrics endpoint never came up"
            time.sleep(0.3)


def test_worker_metrics_move_with_the_work(
    short_docs: Path, tiny_bundle: Path, pg_url: str, redis_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, free_port,
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in DOCS:
        shutil.copyfile(short_docs / name, docs / name)  # a link out is refused
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf\n")
    base = worker_env(tmp_path / "home", pg_url, redis_url, tiny_bundle, reroute_below="0.75",
                      audit_fraction="0.5", max_batch="4", log_json="true")
    base.pop("PROMETHEUS_MULTIPROC_DIR", None)
    ingest_port, classify_port = free_port(), free_port()
    use_settings(monkeypatch, base)
    logs = {"ingest": tmp_path / "ingest.log", "classify": tmp_path / "classify.log"}
    procs = {
        # ingest and deferred OCR (the scan's page) in one prefork worker
        "ingest": start_doctriage(["worker", "--queues", "ingest,ocr", "-c", "2"],
                                  {**base, "DOCTRIAGE_METRICS_PORT": str(ingest_port)},
                                  logs["ingest"]),
        "classify": start_doctriage(["worker", "--queues", "classify,full_depth", "-c", "2"],
                                    {**base, "DOCTRIAGE_METRICS_PORT": str(classify_port)},
                                    logs["classify"]),
    }
    try:
        before_i = _wait_up(ingest_port, procs["ingest"], logs["ingest"])
        before_c = _wait_up(classify_port, procs["classify"], logs["classify"])
        # Declared before any work, at zero.
        assert total(before_i, "doctriage_pages_ingested_total") == 0
        assert total(before_c, "doctriage_pages_classified_total") == 0
        assert total(before_c, "doctriage_pages_rerouted_total") == 0

        result = CliRunner().invoke(app, ["submit", str(docs)])
        assert result.exit_code == 0, result.output

        states = wait_until_final(pg_url, procs, logs, timeout_s=TIMEOUT_S, count=4)
        engine = make_engine(pg_url)
        sessions = session_factory(engine)
        with session_scope(sessions) as s:
            docs_rows = list(s.execute(select(Document)).scalars())
            pages = list(s.execute(select(Page)).scalars())
            preds = list(s.execute(select(Prediction)).scalars())
        engine.dispose()
        time.sleep(1.0)  # task_postrun runs just after the step's commit
        after_i = scrape(ingest_port)
        after_c = scrape(classify_port)
    finally:
        for p in procs.values():
            stop_process(p)

    assert sorted(states) == ["DONE", "DONE", "DONE", "FAILED"]
    check_ingest_figures(after_i, pages)
    check_classify_figures(after_c, preds)
    check_json_logs(logs["ingest"], {d.id for d in docs_rows})


def check_ingest_figures(after_i: dict, pages: list[Page]) -> None:
    """The ingest (and ocr) worker's endpoint: pages by text source at ingest (the scan's page
    awaiting OCR, deferred), the OCR run by the ocr task, task latency, the broken document by
    reason."""
    sources = Counter(p.text_source for p in pages)
    assert set(sources) == {"text_layer", "ocr"}
    at_ingest = Counter("awaiting_ocr" if s == "ocr" else s for s in sources.elements())
    assert by_label(after_i, "doctriage_pages_ingested_total", "text_source") == dict(at_ingest)
    assert total(after_i, "doctriage_ocr_pages_total", outcome="run") == sources["ocr"]
    assert total(after_i, "doctriage_task_seconds_count", task="doctriage.ocr",
                 outcome="success") == sources["ocr"]
    assert total(after_i, "doctriage_page_ingest_seconds_count") == len(pages)
    assert total(after_i, "doctriage_task_seconds_count", task="doctriage.ingest",
                 outcome="success") == 4
    assert total(after_i, "doctriage_failures_total", where="ingest",
                 reason="DocumentError") == 1


def check_classify_figures(after_c: dict, preds: list[Prediction]) -> None:
    """The classify worker's endpoint: pages by class and exit stage, confidences, re-routes,
    batches, drained stage queues."""
    early = [p for p in preds if p.pass_name == "early"]
    full = [p for p in preds if p.pass_name == "full"]
    assert by_label(after_c, "doctriage_pages_classified_total", "label",
                    pass_name="early") == dict(Counter(p.label for p in early))
    assert by_label(after_c, "doctriage_pages_classified_total", "exit_stage",
                    pass_name="early") == dict(Counter(str(p.exit_stage) for p in early))
    assert total(after_c, "doctriage_pages_classified_total", pass_name="full") == len(full)
    assert total(after_c, "doctriage_pages_rerouted_total") == len(full) > 0
    assert total(after_c, "doctriage_confidence_count", pass_name="early") == len(early)
    assert total(after_c, "doctriage_confidence_sum", pass_name="early") == pytest.approx(
        sum(p.confidence for p in early), rel=1e-6)
    fills = total(after_c, "doctriage_batch_fill_count", batcher="early", stage="0")
    assert 1 <= fills <= len(early)
    assert total(after_c, "doctriage_batch_fill_count", batcher="full") >= 1
    # Every stage queue is drained once the work is done.
    depth = [v for (n, _), v in after_c.items() if n == "doctriage_stage_queue_depth"]
    assert depth and all(v == 0 for v in depth)
    assert total(after_c, "doctriage_task_seconds_count", task="doctriage.classify",
                 outcome="success") >= 1
    assert total(after_c, "doctriage_task_seconds_count", task="doctriage.full_depth",
                 outcome="success") >= 1


def check_json_logs(log: Path, document_ids: set[int]) -> None:
    """With DOCTRIAGE_LOG_JSON the worker logs JSON lines that name the task's ids."""
    records = [json.loads(line) for line in log.read_text().splitlines()
               if line.startswith("{")]
    done = {r.get("document_id") for r in records
            if r["logger"] == "celery.app.trace" and "succeeded" in r["message"]
            and "doctriage.ingest[" in r["message"]}  # (the same worker runs ocr tasks)
    assert done == document_ids
    assert all(r["level"] and r["logger"] for r in records)
