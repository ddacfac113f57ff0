"""Smoke runs of bench/pipeline.py, bench/memory.py and bench/step_costs.py on tiny inputs, as
a user runs them (a subprocess), checking that the figures they print are consistent with what
they ran."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )


def test_pipeline_compares_embedded_and_naive_on_the_same_pages(
    bench_docs: Path, bench_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pipeline.json"
    proc = run_bench("pipeline.py", bench_docs, "--model", bench_bundle, "--threads", "1",
                     "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    emb, naive = result["embedded"], result["naive"]
    assert result["documents"] == 2
    assert emb["pages"] == naive["pages"] == 2
    assert emb["documents_by_state"] == {"DONE": 2}
    # The PDF's text layer is used; the image goes to tesseract. The naive run OCRs both.
    assert emb["pages_by_text_source"] == {"ocr": 1, "text_layer": 1}
    for part in ("rasterise", "text_layer", "ocr", "classification", "storage"):
        assert emb["split_s"][part] > 0, part
    # The timers account for the run: what no timer saw ("other") is a small part of it.
    assert emb["split_s"]["other"] < 0.25 * emb["wall_s"], emb["split_s"]
    assert naive["split_s"]["ocr"] > 0 and naive["split_s"]["classification"] > 0
    assert result["ratio_pages_per_s"] == round(emb["pages_per_s"] / naive["pages_per_s"], 2)
    assert result["label_agreement"]["pages"] == 2


def test_pipeline_rejects_a_missing_folder_or_manifest(tmp_path: Path, bench_bundle: Path) -> None:
    for data in (tmp_path / "nope", tmp_path):  # no folder; a folder without manifest.csv
        proc = run_bench("pipeline.py", data, "--model", bench_bundle,
                         "--out", tmp_path / "x.json")
        assert proc.returncode == 2
        err = proc.stderr.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.json").exists()


def test_memory_rejects_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    proc = run_bench("memory.py", "--model", tmp_path, "--out", tmp_path / "m.json")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "not a model bundle" in proc.stderr


def test_memory_reports_peaks_per_scenario(bench_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    proc = run_bench("memory.py", "--pages", "3", "--backlog", "40", "--walk-backlog", "20",
                     "--distinct", "3", "--max-batch", "8", "--threads", "1",
                     "--model", bench_bundle, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    ingest, backlog, walk = result["ingest"], result["backlog"], result["backlog_never_exit"]
    assert ingest["pages"] == 3 and ingest["documents_by_state"] == {"DONE": 1}
    assert ingest["peak_rss_mib"] >= ingest["rss_model_loaded_mib"] > 0
    assert sum(backlog["exit_stage_histogram"].values()) == 40
    assert backlog["peak_rss_mib"] >= backlog["rss_backlog_held_mib"]
    assert backlog["encoded_input_kib_per_page"] > 0 and backlog["stage_state_kib_per_page"] > 0
    # Never exiting: every page ends at the final stage, so pages were parked with a state,
    # and the drain schedule keeps that to a few batches, not the whole backlog.
    last = str(max(int(k) for k in walk["exit_stage_histogram"]))
    assert walk["exit_stage_histogram"] == {last: 20}
    assert 0 < walk["peak_pages_parked_with_state"] <= 2 * 8


def test_step_costs_splits_each_path_by_phase_and_store(
    bench_docs: Path, bench_bundle: Path, tmp_path: Path
) -> None:
    from servicekit import PG_ADMIN

    out = tmp_path / "steps.json"
    proc = run_bench("step_costs.py", bench_bundle, bench_docs, "--docs", "1", "--repeat", "1",
                     "--pg", PG_ADMIN, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    medians = result["median_cpu_ms_per_page"]
    assert set(medians) == {"chunked_sqlite", "chunked_postgres", "per_document_sqlite",
                            "per_document_postgres"}
    assert all(run[0]["pages"] == 1 for run in result["runs"].values())
    for name, m in medians.items():
        assert m["ingest_client"] > 0 and m["classify_client"] > 0, name
        parts = m["ingest_client"] + m["ingest_postgres"] + m["classify_client"]
        assert abs(m["total"] - parts - m["classify_postgres"]) < 0.05, name
        if name.endswith("sqlite"):  # no server to count
            assert m["ingest_postgres"] == m["classify_postgres"] == 0, name
    assert result["over_chunked_sqlite"]["chunked_sqlite"] == 0
