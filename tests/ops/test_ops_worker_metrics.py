"""The Prometheus endpoint of real workers: an ingest worker (prefork, two children: its figures
reach the endpoint through the multiprocess files) and a classify worker (threads), both
`doctriage worker` subprocesses on the real Redis and PostgreSQL. Scraped before and after real
documents went through; the figures must match what the store holds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from servicekit import start_doctriage, stop_process
from sqlalchemy import select
from typer.testing import CliRunner

from db.models import Document, Page, Prediction
from db.session import make_engine, session_factory, session_scope
from doctriage.cli import app
from doctriage.settings import get_settings

pytestmark = pytest.mark.services

TIMEOUT_S = 150
DOCS = [  # born-digital (text layer) and one scan (OCR); 4 pages in all
    "contract/kleister-nda-83087d7615931fce886400dab46a067a.pdf",
    "invoice/vrdu-adbuy-42adf390-6e50-6fbc-fbbe-65117a1ffcb2.pdf",
    "form/funsd-0000990274.png",
]


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
    realdocs_dir: Path, tiny_bundle: Path, pg_url: str, redis_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, free_port,
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for rel in DOCS:
        shutil.copyfile(realdocs_dir / rel, docs / Path(rel).name)  # a link out is refused
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf\n")
    base = {
        **os.environ,
        "DOCTRIAGE_HOME": str(tmp_path / "home"),
        "DOCTRIAGE_DATABASE_URL": pg_url,
        "DOCTRIAGE_BROKER_URL": redis_url,
        "DOCTRIAGE_MODEL_DIR": str(tiny_bundle),
        "DOCTRIAGE_REROUTE_BELOW": "0.75",
        "DOCTRIAGE_AUDIT_FRACTION": "0.5",
        "DOCTRIAGE_MAX_BATCH": "4",
        "DOCTRIAGE_LOG_JSON": "true",
        "OMP_THREAD_LIMIT": "1",
    }
    base.pop("PROMETHEUS_MULTIPROC_DIR", None)
    ingest_port, classify_port = free_port(), free_port()
    for key, value in base.items():
        if key.startswith("DOCTRIAGE_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    logs = {"ingest": tmp_path / "ingest.log", "classify": tmp_path / "classify.log"}
    procs = {
        "ingest": start_doctriage(["worker", "--queues", "ingest", "-c", "2"],
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

        engine = make_engine(pg_url)
        sessions = session_factory(engine)
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            with session_scope(sessions) as s:
                states = [d.state for d in s.execute(select(Document)).scalars()]
            if len(states) == 4 and all(st in ("DONE", "FAILED") for st in states):
                break
            for name, p in procs.items():
                assert p.poll() is None, logs[name].read_text(errors="replace")[-3000:]
            if time.monotonic() > deadline:
                pytest.fail(f"documents not finished in {TIMEOUT_S}s: {states}\n"
                            + logs["classify"].read_text(errors="replace")[-2000:])
            time.sleep(0.5)
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
    early = [p for p in preds if p.pass_name == "early"]
    full = [p for p in preds if p.pass_name == "full"]

    # Ingest worker: pages by text source, task latency, the broken document by reason.
    sources = Counter(p.text_source for p in pages)
    assert by_label(after_i, "doctriage_pages_ingested_total", "text_source") == dict(sources)
    assert set(sources) == {"text_layer", "ocr"}
    assert total(after_i, "doctriage_page_ingest_seconds_count") == len(pages)
    assert total(after_i, "doctriage_task_seconds_count", task="doctriage.ingest",
                 outcome="success") == 4
    assert total(after_i, "doctriage_failures_total", where="ingest",
                 reason="DocumentError") == 1

    # Classify worker: pages by class and exit stage, confidences, re-routes, batches.
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

    # With DOCTRIAGE_LOG_JSON the worker logs JSON lines that name the task's ids.
    records = [json.loads(line) for line in logs["ingest"].read_text().splitlines()
               if line.startswith("{")]
    done = {r.get("document_id") for r in records
            if r["logger"] == "celery.app.trace" and "succeeded" in r["message"]}
    assert done == {d.id for d in docs_rows}
    assert all(r["level"] and r["logger"] for r in records)
