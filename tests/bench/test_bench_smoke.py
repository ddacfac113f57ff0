"""Smoke runs of the benchmarks on tiny inputs, as a user runs them (`python -m bench.NAME` in a
subprocess): each exits 0 and writes the JSON keys its readers rely on, with the conditions of
the run. The pipeline, memory and step-cost runs are also checked for figures consistent with
what they ran. gpu_check has its own tests (test_gpu_check.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONDITIONS = {"date", "host", "cores", "loadavg_before", "loadavg_after", "torch_threads",
              "git_commit", "command"}


def run_bench(script: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"bench.{script.removesuffix('.py')}", *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )


def finished(proc: subprocess.CompletedProcess[str], out: Path, *,
             echoed: bool = True) -> dict[str, Any]:
    """The run's JSON (checked against stdout when the script echoes it), its conditions
    present."""
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    if echoed:
        assert json.loads(proc.stdout[proc.stdout.index("{"):]) == result
    assert set(result["conditions"]) >= CONDITIONS, result["conditions"]
    assert result["conditions"]["command"].startswith("python -m bench.")
    return result


def test_pipeline_compares_embedded_and_naive_on_the_same_pages(
    bench_docs: Path, bench_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pipeline.json"
    proc = run_bench("pipeline.py", bench_docs, "--model", bench_bundle, "--threads", "1",
                     "--sample-ms", "0.5", "--out", out)
    result = finished(proc, out)
    emb, naive = result["embedded"], result["naive"]
    assert result["documents"] == 2
    assert emb["pages"] == naive["pages"] == 2
    assert emb["documents_by_state"] == {"DONE": 2}
    # The PDF's text layer is used; the image goes to tesseract. The naive run OCRs both.
    assert emb["pages_by_text_source"] == {"ocr": 1, "text_layer": 1}
    assert set(emb["split_s"]) == {"rasterise", "text_layer", "text_source_decision", "ocr",
                                   "classification", "storage", "other"}
    # Sampled: the parts that take milliseconds or more on two pages are seen (the text layer
    # of one short page may fall between two samples).
    for part in ("rasterise", "ocr", "classification", "storage"):
        assert emb["split_s"][part] > 0, part
    # The parts account for the run: what no part covers ("other") is a small part of it.
    assert emb["split_s"]["other"] < 0.25 * emb["wall_s"], emb["split_s"]
    assert naive["split_s"]["ocr"] > 0 and naive["split_s"]["classification"] > 0
    assert result["ratio_pages_per_s"] == round(emb["pages_per_s"] / naive["pages_per_s"], 2)
    assert result["label_agreement"]["pages"] == 2


def test_ocr_free_compares_the_deferred_pipeline_with_both_baselines(
    bench_docs: Path, bench_bundle: Path, tmp_path: Path
) -> None:
    from classifier.bundle import load_bundle, save_bundle

    model = load_bundle(bench_bundle)  # both documents held out
    model.metadata = {"data_split": {"val_documents": ["contract/one.pdf", "receipt/two.png"]}}
    # The OCR-free exit always answers, confidently (a tiny temperature): no re-route to OCR.
    model.ocr_free = {"temperature": 1e-4, "threshold": 0.0}
    save_bundle(model, tmp_path / "bundle", name="tiny-ocr-free")
    out = tmp_path / "ocr_free.json"
    proc = run_bench("ocr_free.py", bench_docs, "--model", tmp_path / "bundle", "--threads", "1",
                     "--out", out)
    result = finished(proc, out)
    assert result["documents"] == 2 and result["pages_needing_ocr"] == 1
    deferred, baseline = result["deferred"], result["ocr_all_full_depth"]
    assert deferred["pages"] == baseline["pages"] == result["naive"]["pages"] == 2
    # The scanned receipt is answered before OCR in the deferred run, OCR'd in the baseline.
    assert deferred["pages_by_text_source"] == {"ocr_avoided": 1, "text_layer": 1}
    assert baseline["pages_by_text_source"] == {"ocr": 1, "text_layer": 1}
    assert baseline["exit_stage_histogram"] == {str(model.num_stages - 1): 2}
    ratio = result["ratios"]["deferred_over_naive"]["pages_per_cpu_s"]
    assert ratio == round(deferred["pages_per_cpu_s"] / result["naive"]["pages_per_cpu_s"], 2)


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
    result = finished(proc, out)
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
    result = finished(proc, out)
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


# -- every other script at its smallest size -------------------------------------------------


def _capacity(fx: Fixtures) -> tuple[list[Any], Callable[[dict], None]]:
    def check(r: dict) -> None:
        (row,) = r["results"]
        assert (row["size"], row["batch"], row["torch_threads"]) == ("tiny", 2, 1)
        assert row["pages_per_s"] > 0 and row["encode_ms_per_page"] > 0

    return ["--sizes", "tiny", "--batch", "2", "--threads", "1", "--repeats", "1"], check


def _batching(fx: Fixtures) -> tuple[list[Any], Callable[[dict], None]]:
    def check(r: dict) -> None:
        assert r["pages"] == 1 and r["torch_threads"] == 1  # only the PDF has a text layer
        assert sum(r["exit_stage_histogram"].values()) == 1
        (row,) = r["results"]
        assert row["batch"] == 2
        assert set(row["pages_per_s"]) == {"full", "sync", "compaction", "stage_batcher"}
        # Batching never changes a page's decision.
        assert row["exit_agreement"] == {"sync_vs_stage": 1.0, "compaction_vs_stage": 1.0}
        assert row["stage_batcher_stages"] and row["schedule_fill_replay"]
        # every repeat's CPU time is kept beside the minimum (one repeat here)
        assert {k: len(v) for k, v in row["cpu_s_runs"].items()} == dict.fromkeys(
            ("full", "sync", "compaction", "stage"), 1)
        assert row["ratio_to_ideal_cpu_median"] == row["ratio_to_ideal_cpu"]

    return [fx.bundle(), fx.docs(), "--batches", "2", "--max-pages", "4", "--repeat", "1",
            "--threads", "1"], check


def _early_exit(fx: Fixtures) -> tuple[list[Any], Callable[[dict], None]]:
    def check(r: dict) -> None:
        assert r["pages"] == 2 and r["documents"] == 2
        assert 0 <= r["accuracy_early_exit"] <= 1 and 0 <= r["accuracy_full_depth"] <= 1
        assert sum(r["exit_counts"]) == 2 and r["speedup_wall"] > 0
        assert r["speedup_engine"] == "stage_batcher"

    return [fx.bundle(), fx.docs(), "--batch-size", "2", "--rounds", "1", "--threads", "1",
            "--cache-dir", fx.tmp / "cache"], check


def _ingest(fx: Fixtures) -> tuple[list[Any], Callable[[dict], None]]:
    def check(r: dict) -> None:
        assert (r["documents"], r["pages"]) == (2, 2)
        assert r["text_layer"]["pages"] == 1 and r["text_layer"]["median_ms"] > 0
        assert r["ocr_share"]["pages_needing_ocr"] == 1 and r["ocr_share"]["share"] == 0.5
        assert r["ocr"]["sampled_pages"] == 1 and r["ocr"]["median_ms"] > 0
        assert r["renderers_and_text_extractors"]["render_pypdfium2"]["n"] == 1

    return ["--realdocs", fx.docs(), "--ocr-per-source", "1"], check


def _backlog_pacing(fx: Fixtures) -> tuple[list[Any], Callable[[dict], None]]:
    def check(r: dict) -> None:
        assert [run["paced"] for run in r["runs"]] == [False, True]
        for run in r["runs"]:
            assert run["backlog_docs"] == 30 and run["backlog_drained_s"] is not None
            assert run["live_messages"] > 0 and run["live_wait_ms_max"] >= run["live_wait_ms_p50"]

    return ["--docs", "30", "--service-ms", "1", "--live-every-ms", "20", "--max-in-queue", "4",
            "--broker", fx.redis(claimed=True)], check


def _celery_floor(fx: Fixtures) -> tuple[list[Any], Callable[[dict], None]]:
    def check(r: dict) -> None:
        solo = r["pools"]["solo"]
        assert len(solo["rounds"]) == 1 and solo["median_tasks_per_s"] > 0
        # CPU times tick in 10 ms: a few dozen no-op tasks may read 0, never less.
        for key in ("worker", "redis", "publish"):
            assert solo[f"median_{key}_cpu_ms_per_task"] >= 0, key

    url = fx.redis(claimed=False)  # the script wants an empty DB
    base, db = url.rsplit("/", 1)
    return ["--tasks", "50", "--repeat", "1", "--pools", "solo", "--redis", base,
            "--redis-db", db], check


def _fuzz_ingest(fx: Fixtures) -> tuple[list[Any], Callable[[dict], None]]:
    def check(r: dict) -> None:
        assert r["cases"] == 3 and r["findings"] == 0 and r["crashes"] == r["hangs"] == 0
        assert sum(r["outcomes"].values()) == 3

    fx.realdocs()
    return ["--cases", "3", "--workers", "1", "--ocr-share", "0", "--no-fixtures"], check


def _audit_drift(fx: Fixtures) -> tuple[list[Any], Callable[[dict], None]]:
    def check(r: dict) -> None:
        assert len(r["runs"]) == 2 and r["params"]["pages"] == 400
        for run in r["runs"]:
            # a 25% sample of 400 pages: the audit query saw exactly the drawn pages
            assert run["sampled_pages"] == run["audit_sample"] > 0
            assert run["rerouted"] >= run["audit_sample"]
            assert run["lower"] <= run["estimate"] <= run["upper"]
            assert run["covered"] == (run["lower"] <= run["true_disagreement"] <= run["upper"])
            assert run["flagged"] == (run["lower"] > r["params"]["budget"])
            # re-tuned on 2,000 pages' 25% sample at a 3-point budget: a stored threshold
            # whose fresh pages' disagreement is what the simulation says
            tune = run["tune"]
            assert tune["tuned"] and tune["stored"] and tune["sampled_pages"] > 400
            assert 0 < tune["threshold"] <= 1 and 0 < tune["early_share_after"] < 1
            assert tune["inside_budget"] == (tune["true_disagreement_after"] <= 0.03)
        assert r["flagged"] == sum(run["flagged"] for run in r["runs"])
        assert r["covered"] == sum(run["covered"] for run in r["runs"])
        assert r["tuned_back_inside_budget"] == sum(run["tune"]["inside_budget"]
                                                    for run in r["runs"])

    return ["--runs", "2", "--pages", "400", "--audit-fraction", "0.25", "--drift", "0.2",
            "--budget", "0.03", "--tune-pages", "2000"], check


def _ocr_settings(fx: Fixtures) -> tuple[list[Any], Callable[[dict], None]]:
    def check(r: dict) -> None:
        # the one OCR page (the PNG receipt) under each of the four settings
        assert r["documents"] == 1
        assert [(s["ocr_dpi"], s["psm"]) for s in r["settings"]] == [
            (100, 3), (100, 6), (200, 3), (200, 6)]
        for s in r["settings"]:
            assert s["pages"] == 1 and s["ms_per_page"] > 0 and s["words_per_page"] > 0
            assert s["cpu_ms_per_page"] > 0
            assert 0.0 <= s["full_depth_accuracy"] <= 1.0
        cheapest = r["cheapest_within_budget"]
        assert (cheapest["ocr_dpi"], cheapest["psm"]) in {(s["ocr_dpi"], s["psm"])
                                                          for s in r["settings"]}

    return [fx.bundle(), fx.docs(), "--split", "all", "--dpis", "100,200", "--psms", "3,6",
            "--workers", "1", "--cache-dir", fx.tmp / "cache"], check


def _train_step(fx: Fixtures) -> tuple[list[Any], Callable[[dict], None]]:
    def check(r: dict) -> None:
        assert set(r["seconds_per_pass"]) == {"fp32", "bf16"}
        assert all(len(v) == 2 and min(v) > 0 for v in r["seconds_per_pass"].values())
        assert r["bf16_speedup"] == pytest.approx(
            r["median_s"]["fp32"] / r["median_s"]["bf16"], rel=0.01)

    return ["--config", "tiny", "--pages", "8", "--batch-size", "4", "--rounds", "1",
            "--threads", "1"], check


SMOKE: dict[str, Callable[[Fixtures], tuple[list[Any], Callable[[dict], None]]]] = {
    "audit_drift": _audit_drift,
    "capacity": _capacity,
    "batching": _batching,
    "early_exit": _early_exit,
    "ingest": _ingest,
    "backlog_pacing": _backlog_pacing,
    "celery_floor": _celery_floor,
    "fuzz_ingest": _fuzz_ingest,
    "ocr_settings": _ocr_settings,
    "train_step": _train_step,
}


class Fixtures:
    """What a smoke run needs, made only when asked for (the realdocs-free runs stay free)."""

    def __init__(self, request: pytest.FixtureRequest, tmp: Path) -> None:
        self.request, self.tmp = request, tmp

    def bundle(self) -> Path:
        return self.request.getfixturevalue("bench_bundle")

    def docs(self) -> Path:
        return self.request.getfixturevalue("bench_docs")

    def realdocs(self) -> Path:
        return self.request.getfixturevalue("realdocs_dir")

    def redis(self, *, claimed: bool) -> str:
        """A spare Redis DB's URL, flushed afterwards; `claimed=False` takes the claim key back
        out for a script that insists on an empty DB (another run may then claim it too: the
        window is the script's start-up)."""
        import redis
        from servicekit import CLAIM_KEY, spare_redis_db

        url = self.request.getfixturevalue("bench_redis_stack").enter_context(spare_redis_db())
        if not claimed:
            redis.Redis.from_url(url).delete(CLAIM_KEY)
        return url


@pytest.fixture
def bench_redis_stack() -> Any:
    import contextlib

    with contextlib.ExitStack() as stack:
        yield stack


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_bench_script_runs_at_its_smallest_size(
    script: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    args, check = SMOKE[script](Fixtures(request, tmp_path))
    out = tmp_path / f"{script}.json"
    proc = run_bench(script, *args, "--out", out)
    check(finished(proc, out))


@pytest.mark.slow  # a minute or more: three `doctriage` processes, workers started and warmed
def test_queue_overhead_runs_at_its_smallest_size(
    bench_bundle: Path, tmp_path: Path, bench_redis_stack: Any
) -> None:
    import redis
    from servicekit import CLAIM_KEY, PG_ADMIN, spare_redis_db

    from pipelines.synth import generate_corpus

    data = tmp_path / "docs"
    generate_corpus(data, 1, 0, scanned_fraction=0.0, classes=["letter", "memo"],
                    progress=False)
    url = bench_redis_stack.enter_context(spare_redis_db())
    redis.Redis.from_url(url).delete(CLAIM_KEY)
    base, db = url.rsplit("/", 1)
    out = tmp_path / "qo.json"
    proc = run_bench("queue_overhead", bench_bundle, data, "--docs", "1", "--repeat", "1",
                     "--max-doc-pages", "100", "--redis", base, "--redis-db", db,
                     "--pg", PG_ADMIN, "--out", out)
    result = finished(proc, out)
    assert result["documents"] == 1 and result["pages"] >= 1
    assert set(result["median_cpu_ms_per_page"]) == {"embedded_sqlite", "embedded_postgres",
                                                     "distributed_1proc"}
    assert "distributed_1proc_vs_embedded_sqlite" in result["overhead_cpu_ms_per_page"]


@pytest.mark.slow  # runs the bad-input suites (real PostgreSQL, Redis, Celery workers)
def test_faults_table_of_the_bad_input_suites(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    proc = run_bench("faults", "--only", "bad_input", "--out", out)
    result = finished(proc, out, echoed=False)
    assert result["suites"]["bad_input"]["exit_code"] == 0, result["suites"]
    assert result["table"] and all(r["passed"] for r in result["table"])
    assert {"fault", "pages_in", "pages_out", "duplicates"} <= set(result["table"][0])


@pytest.mark.slow  # about a minute: two modes, each with two Celery workers started and warmed
def test_pressure_runs_at_its_smallest_size(tmp_path: Path) -> None:
    from servicekit import PG_ADMIN

    out = tmp_path / "pressure.json"
    proc = run_bench("pressure", "--pages", "20", "--fit-pages", "40", "--live-every-s", "0.3",
                     "--pg", PG_ADMIN, "--out", out)
    result = finished(proc, out)
    assert result["backlog_pages_seeded"] >= 20
    assert result["pressure_policy"]["budget"] == 0.02
    for mode in ("off", "on"):
        run = result["modes"][mode]
        assert run["backlog_pages"] == result["backlog_pages_seeded"] and run["live_drops"] >= 1
        assert run["live_latency_done"]["drops"] == run["live_drops"]
        assert run["pages_per_s"] > 0 and run["early_answers"] > run["backlog_pages"]
        # Every early answer recomputed at full depth; where the workers stored a full-depth
        # pass, the recomputation gives its label (the same staged forward).
        truth = run["true_loss"]
        assert truth["total"]["pages"] == run["early_answers"]
        assert sum(v["pages"] for v in truth["by_version"]) == run["early_answers"]
        agree = truth["stored_full_agree"]
        assert agree["pages"] == run["full_depth_passes"] and agree["same_label"] == agree["pages"]
    assert result["modes"]["off"]["pressure_share"] == 0.0  # adaptation off: never pressure
    assert {"live_p95_ratio_off_over_on", "estimated_loss_on_within_pressure_budget"} <= set(
        result["verdict"])


# Scripts with a smoke test of their own above (or in test_gpu_check.py).
DEDICATED = {"pipeline", "ocr_free", "memory", "step_costs", "queue_overhead", "faults",
             "gpu_check", "pressure"}


def test_every_bench_script_has_a_smoke_test() -> None:
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py")
               if 'if __name__ == "__main__":' in p.read_text()}
    assert scripts == set(SMOKE) | DEDICATED
