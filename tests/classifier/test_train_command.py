"""`doctriage train` / `doctriage evaluate` end to end on a tiny generated PDF corpus."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from classwords import CLASS_WORDS
from reportlab.lib.pagesizes import letter
from reportlab.pdfgen import canvas
from typer.testing import CliRunner

from doctriage.cli import app

# The shared lists, with a word more for two classes (the corpus these tests were tuned on).
WORDS = {
    "invoice": [*CLASS_WORDS["invoice"], "remit"],
    "letter": [*CLASS_WORDS["letter"], "kind"],
    "memo": CLASS_WORDS["memo"],
}


def write_pdf(path: Path, label: str, rng: random.Random, pages: int) -> None:
    c = canvas.Canvas(str(path), pagesize=letter)
    for _ in range(pages):
        y = 740
        for _line in range(rng.randint(5, 14)):
            words = [rng.choice(WORDS[label]) for _ in range(rng.randint(3, 8))]
            c.drawString(rng.randint(50, 150), y, " ".join(words))
            y -= rng.randint(16, 30)
        if label == "invoice":
            c.rect(60, 100, 480, 200)
        c.showPage()
    c.save()


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    rng = random.Random(0)
    root = tmp_path / "data"
    for label in WORDS:
        (root / label).mkdir(parents=True)
        for i in range(5):
            write_pdf(root / label / f"{label} {i}.pdf", label, rng, pages=1 + i % 2)
    return root


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_ucb_fallback(exits: dict, summary: dict, output: str) -> None:
    """Six validation documents cannot bound a 0.5% disagreement at the default delta: no
    early exit, recorded in exits.json and the summary, and said in the output."""
    chosen = exits["metadata"]["calibration"]["threshold_selection"]
    assert chosen["selection"] == "ucb" and chosen["delta"] == 0.1 and chosen["budget"] == 0.005
    assert chosen == summary["threshold_selection"]
    assert chosen["validation_disagreement_ucb"] > 0.005 and chosen["fallback"]
    assert exits["thresholds"][:-1] == [1.01, 1.01] and "no early exit" in output
    assert exits["policy"] == {"name": "full_depth"}  # served as one plain full-depth pass
    # The pressure policy, fitted on the same pages at its looser budget: too few pages for
    # that too, so the normal policy stands (never dearer than it).
    assert exits["pressure"]["budget"] == 0.02 and exits["pressure"]["policy"] == exits["policy"]


def test_train_evaluate_resume(tiny_corpus, tmp_path):
    out = tmp_path / "model"
    common = [
        "--config",
        "tiny",
        "--batch-size",
        "4",
        "--lr",
        "0.003",
        "--val-fraction",
        "0.4",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--placements",
        "every_other",
        "--scan-copies",
        "0.5",
    ]
    res = run("train", tiny_corpus, "--out", out, "--epochs", "2", *common)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    assert summary["epochs_done"] == 2 and summary["val_pages"] > 0
    exits = json.loads((out / "exits.json").read_text())
    val_docs = exits["metadata"]["data_split"]["val_documents"]
    assert len(val_docs) == 6 and {d.split("/")[0] for d in val_docs} == set(WORDS)
    assert exits["exit_layers"] == [0, 2, 4]
    # half the born-digital training PDFs also trained as simulated scans
    split = exits["metadata"]["data_split"]
    assert split["scan_copies"] == {"share": 0.5, "documents": round(0.5 * 9)}
    assert split["train_documents"] == 9
    assert_ucb_fallback(exits, summary, res.output)

    res = run("train", tiny_corpus, "--out", out, "--epochs", "4", "--resume", *common,
              "--selection", "point", "--delta", "0.25")
    assert res.exit_code == 0, res.output
    chosen = json.loads((out / "exits.json").read_text())["metadata"]["calibration"][
        "threshold_selection"]
    assert chosen["selection"] == "point" and chosen["delta"] == 0.25
    assert chosen["validation_disagreement"] <= chosen["validation_disagreement_ucb"]
    state = json.loads((out / "checkpoint" / "train_state.json").read_text())
    assert state["epochs_done"] == 4 and [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]

    res = run(
        "evaluate",
        out,
        tiny_corpus,
        "--json",
        "--split",
        "val",
        "--batch-size",
        "4",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        tmp_path / "eval",
        "--scan-copies",
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{") :])
    # every held-out document is a born-digital PDF: each is scored again as a simulated scan
    scans = report["scan_copies"]
    assert scans["documents"] == 6
    assert scans["originals"]["pages"] == report["pages"] == scans["scanned"]["pages"]
    assert scans["originals"]["full_depth_accuracy"] == report["full_depth"]["accuracy"]
    assert 0.0 <= scans["scanned"]["full_depth_accuracy"] <= 1.0
    assert report["documents"] == 6 and report["pages"] >= 6
    assert report["full_depth"]["accuracy"] >= 0.5
    assert [e["layer"] for e in report["exits"]] == [0, 2, 4]
    assert report["early_exit"]["speedup_wall"] > 0
    assert report["threshold_selection"]["selection"] == "point"
    assert sum(g["pages"] for g in report["breakdowns"]["class"].values()) == report["pages"]
    # timed on the serving engine, with the batch size asked for
    assert report["early_exit"]["engine"] == "stage_batcher"
    assert report["early_exit"]["timing"]["max_batch"] == 4
    assert (tmp_path / "eval" / "tradeoff.png").exists()
    assert (tmp_path / "eval" / "confusion.png").exists()
    assert (tmp_path / "eval" / "report.json").exists()


def test_bad_input_is_one_line_exit_2(tmp_path):
    res = run("train", tmp_path / "nope", "--out", tmp_path / "m", "--config", "tiny")
    assert res.exit_code == 2
    assert "no such folder" in res.output and "Traceback" not in res.output
    res = run("train", tmp_path, "--out", tmp_path / "m", "--scan-copies", "2")
    assert res.exit_code == 2 and "--scan-copies" in res.output
    res = run("train", tmp_path, "--out", tmp_path / "m", "--strategy", "magic")
    assert res.exit_code == 2 and "--strategy" in res.output
    res = run("train", tmp_path, "--out", tmp_path / "m", "--placements", "sometimes")
    assert res.exit_code == 2 and "placement" in res.output and "Traceback" not in res.output
    res = run("train", tmp_path, "--out", tmp_path / "m", "--selection", "magic")
    assert res.exit_code == 2 and "--selection" in res.output
    res = run("train", tmp_path, "--out", tmp_path / "m", "--delta", "1.5")
    assert res.exit_code == 2 and "--delta" in res.output
    res = run("evaluate", tmp_path / "nothing", tmp_path)
    assert res.exit_code == 2 and "no such model folder" in res.output


def test_a_test_split_is_held_out_of_training_and_threshold_choice(tiny_corpus, tmp_path):
    out = tmp_path / "model"
    res = run("train", tiny_corpus, "--out", out, "--epochs", "1", "--config", "tiny",
              "--batch-size", "4", "--val-fraction", "0.4", "--test-fraction", "0.2",
              "--scan-copies", "0", "--text-dropout", "0", "--cache-dir", tmp_path / "cache")
    assert res.exit_code == 0, res.output
    split = json.loads((out / "exits.json").read_text())["metadata"]["data_split"]
    test, val = set(split["test_documents"]), set(split["val_documents"])
    # one test and two validation documents of each class's five; the rest trains
    assert len(test) == 3 and {d.split("/")[0] for d in test} == set(WORDS)
    assert len(val) == 6 and not test & val and split["train_documents"] == 6
    res = run("evaluate", out, tiny_corpus, "--json", "--split", "test", "--batch-size", "4",
              "--cache-dir", tmp_path / "cache")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout[res.stdout.index("{"):])["documents"] == 3

    res = run("train", tiny_corpus, "--out", tmp_path / "m2", "--val-fraction", "0.5",
              "--test-fraction", "0.5")
    assert res.exit_code == 2 and "--test-fraction" in res.output
