"""`doctriage thresholds fit`: both selections side by side on labelled pages, with the shipped
default bundle on the short generated documents; the bundle itself is left as it was."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from classifier.risk_bounds import clopper_pearson_upper
from doctriage.cli import app
from doctriage.default_model import SHIPPED_BUNDLE


def test_fit_reports_both_selections_and_leaves_the_bundle(labelled_docs, tmp_path):
    before = (SHIPPED_BUNDLE / "exits.json").read_bytes()
    common = ["thresholds", "fit", str(SHIPPED_BUNDLE), str(labelled_docs), "--batch-size", "4",
              "--cache-dir", str(tmp_path / "cache")]
    res = CliRunner().invoke(app, [*common, "--json", "--delta", "0.2", "--budget", "1"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{"):])
    assert report["pages"] == 8 and report["delta"] == 0.2 and report["budget_points"] == 1
    assert report["bundle"]["threshold_selection"] is None  # the shipped bundle predates it
    ucb, point = report["choices"]["ucb"], report["choices"]["point"]
    # 8 pages cannot bound a 1% disagreement: no early exit, every page at the last stage
    assert ucb["fallback"]
    assert ucb["validation_disagreement_ucb"] == clopper_pearson_upper(0, 8, 0.2)
    assert ucb["exit_counts"][-1] == 8 and ucb["flops_ratio"] == 1.0
    assert ucb["mean_exit_stage"] == len(ucb["thresholds"]) - 1
    assert point["selection"] == "point" and sum(point["exit_counts"]) == 8
    assert point["validation_disagreement_ucb"] == clopper_pearson_upper(
        point["validation_disagreements"], 8, 0.2)
    assert (SHIPPED_BUNDLE / "exits.json").read_bytes() == before

    res = CliRunner().invoke(app, common)
    assert res.exit_code == 0, res.output
    assert "ucb: thresholds" in res.stdout and "[no early exit]" in res.stdout
    res = CliRunner().invoke(app, [*common, "--delta", "0"])
    assert res.exit_code == 2 and "--delta" in res.output
