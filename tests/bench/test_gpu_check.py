"""Smoke run of the GPU check (bench/gpu_check.sh + bench/gpu_check.py) on the CPU with the tiny
config, as the lead runs it on a GPU machine: the JSON it leaves in $OUT must account for every
page and carry the figures the issue asks for."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = 48


def run_check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           # An empty wheel folder: this venv already has the right transformers.
           "GPU_CHECK_WHEELS": str(tmp_path / "no-wheels")}
    return subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--device", "cpu", "--config", "tiny",
         *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )


def test_gpu_check_accounts_for_every_page_per_batch_size(tmp_path: Path) -> None:
    proc = run_check(tmp_path, "--batch-sizes", "8,16", "--pages", str(PAGES), "--repeat", "1",
                     "--dtypes", "fp32,bf16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    # stdout: the device lines, then the same JSON.
    assert json.loads(proc.stdout[proc.stdout.index("{"):]) == report
    assert report["config"] == "tiny" and report["dtypes"] == ["fp32", "bf16"]
    assert report["pages"] == PAGES and report["skipped"] == []
    assert report["policy"]["name"] == "fixed_share"
    # The staged forward holds up in each dtype: finite, the same as transformers' forward, and
    # bf16 close to fp32 on the same weights.
    checks = report["dtype_checks"]
    assert set(checks) == {"eager/fp32", "eager/bf16"}
    for c in checks.values():
        assert c["finite"] and c["staged_vs_transformers_max_abs_logit_diff"] < 1e-3, checks
    assert checks["eager/fp32"]["vs_fp32_max_abs_prob_diff"] == 0.0
    assert checks["eager/bf16"]["vs_fp32_max_abs_prob_diff"] < 0.05
    last = report["num_stages"] - 1
    assert [(r["attention"], r["dtype"], r["batch"]) for r in report["results"]] == [
        ("eager", "fp32", 8), ("eager", "fp32", 16), ("eager", "bf16", 8), ("eager", "bf16", 16)]
    for row in report["results"]:
        b = row["batch"]
        full, early = row["full_depth"], row["early_exit"]
        # Full depth: every page through every layer, in full batches (48 = 6x8 = 3x16).
        assert full["pages_in"] == full["pages_out"] == PAGES
        assert full["exit_stage_histogram"] == {str(last): PAGES}
        assert full["stages"] == [{**full["stages"][0], "pages_in": PAGES, "mean_fill": 1.0}]
        # Early exit: every page leaves exactly once, and pages flow stage to stage.
        assert early["pages_in"] == early["pages_out"] == PAGES
        assert sum(early["exit_stage_histogram"].values()) == PAGES
        assert len(early["exit_stage_histogram"]) > 2  # a 30% share exits at several stages
        stages = early["stages"]
        assert stages[0]["pages_in"] == PAGES
        for a, nxt in itertools.pairwise(stages):
            assert nxt["pages_in"] == a["pages_in"] - a["pages_exited"], (b, stages)
        assert stages[-1]["pages_exited"] == stages[-1]["pages_in"]
        for s in stages:
            batches_needed = -(-s["pages_in"] // b)
            assert batches_needed <= s["batches"]
            assert s["mean_fill"] == round(s["pages_in"] / (s["batches"] * b), 4)
        assert row["batch_fill_per_stage"] == {str(s["stage"]): s["mean_fill"] for s in stages}
        assert early["nonfinite_confidences"] == full["nonfinite_confidences"] == 0
        assert early["mean_layers_per_page"] < full["mean_layers_per_page"] == last
        assert row["ideal_speedup"] > 1
        assert row["pure_model_full_depth_pages_per_s"] > 0 and early["pages_per_s"] > 0
        speedup = full["wall_s"] / early["wall_s"]
        assert abs(row["speedup_vs_full_depth"] - speedup) < 0.01 * speedup + 0.002
        assert abs(row["ratio_to_ideal"] - speedup / row["ideal_speedup"]) < 0.01
    best = max(report["results"], key=lambda r: r["early_exit"]["pages_per_s"])
    assert (report["best"]["dtype"], report["best"]["batch"]) == (best["dtype"], best["batch"])
    assert report["best"]["meets_goal"] is (
        report["best"]["early_exit_pages_per_s"] >= report["goal_early_exit_pages_per_s"])


def test_gpu_check_stops_adding_batch_sizes_past_its_budget(tmp_path: Path) -> None:
    proc = run_check(tmp_path, "--batch-sizes", "8,16", "--pages", "8", "--budget-s", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["results"] == []
    assert [(s["dtype"], s["batch"]) for s in report["skipped"]] == [("fp32", 8), ("fp32", 16)]
    assert "best" not in report


def test_gpu_check_rejects_bad_batch_sizes(tmp_path: Path) -> None:
    proc = run_check(tmp_path, "--batch-sizes", "8,zero")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out" / "gpu_check.json").exists()


def test_gpu_check_runs_the_fused_attention_path(tmp_path: Path) -> None:
    """--attention fused serves through the same batcher, every page once, the same answers as
    transformers' forward to float tolerance."""
    proc = run_check(tmp_path, "--batch-sizes", "8", "--pages", str(PAGES), "--repeat", "1",
                     "--dtypes", "fp32", "--attention", "fused", "--no-host-inputs")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["attention"] == ["fused"]
    check = report["dtype_checks"]["fused/fp32"]
    assert check["finite"] and check["staged_vs_transformers_max_abs_logit_diff"] < 1e-3
    (row,) = report["results"]
    assert row["attention"] == "fused"
    assert row["early_exit"]["pages_in"] == row["early_exit"]["pages_out"] == PAGES
    assert row["full_depth"]["pages_out"] == PAGES
