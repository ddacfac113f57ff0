"""`doctriage evaluate`'s breakdowns: per class, per source, per text source, per exit, and the
confusion matrix (JSON and figure), with the shipped default bundle on the short generated
documents (five text-layer PDFs and one image page that needs OCR)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from synthkit import PDFS, SCAN
from typer.testing import CliRunner

from classifier.breakdowns import breakdowns
from doctriage.cli import app
from doctriage.default_model import SHIPPED_BUNDLE
from pipelines.dataset import read_documents


def test_evaluate_json_breaks_down_to_the_totals(labelled_docs, tmp_path):
    res = CliRunner().invoke(app, [
        "evaluate", str(SHIPPED_BUNDLE), str(labelled_docs), "--json", "--batch-size", "4",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "eval"),
    ])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{"):])
    n = report["pages"]
    assert n == 8
    full_right = round(report["full_depth"]["accuracy"] * n)
    early_right = round(report["early_exit"]["accuracy"] * n)
    parts = report["breakdowns"]
    assert set(parts) == {"class", "source", "text_source"}
    assert set(parts["source"]) == {"born-digital-set", "scan-set"}
    assert parts["source"]["scan-set"]["pages"] == 1
    assert {k: g["pages"] for k, g in parts["text_source"].items()} == {"ocr": 1, "text_layer": 7}
    # the shipped bundle has no OCR-free exit: the one OCR page keeps its OCR
    free = report["ocr_free"]
    assert free["pages"] == 1 and free["exit"] is None and free["ocr_avoided_share"] == 0.0
    assert free["accuracy_with_ocr_free_exit"] == free["full_depth_accuracy_with_ocr"]
    assert set(parts["class"]) == {d.label for d in (*PDFS, SCAN)}
    def right(groups: dict, key: str) -> int:
        return round(sum(g[key] * g["pages"] for g in groups.values()))

    for groups in parts.values():
        assert sum(g["pages"] for g in groups.values()) == n
        assert right(groups, "full_depth_accuracy") == full_right
        assert right(groups, "early_exit_accuracy") == early_right
        for g in groups.values():
            assert len(g["exit_accuracy"]) == len(report["exits"]) == len(g["exit_ece_calibrated"])
    for k, e in enumerate(report["exits"]):  # the per-exit figures add up too
        by_text = parts["text_source"].values()
        exit_right = round(sum(g["exit_accuracy"][k] * g["pages"] for g in by_text))
        assert exit_right == round(e["accuracy"] * n)
    cm = report["confusion_matrix"]
    names = cm["labels"]
    assert len(names) == 16 and len(cm["full_depth"]) == 16
    for key, right in (("full_depth", full_right), ("early_exit", early_right)):
        counts = np.array(cm[key])
        assert counts.sum() == n and np.trace(counts) == right
        for doc in (*PDFS, SCAN):  # rows are true labels
            assert counts[names.index(doc.label)].sum() == doc.pages
    # the bundle predates the threshold-selection record: reported as absent, not invented
    assert report["threshold_selection"] is None
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 0
    assert report["plots"]["confusion"] == str(tmp_path / "eval" / "confusion.png")


def test_breakdowns_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2])
    full = np.array([0, 1, 1, 1, 2])
    early = np.array([0, 1, 0, 1, 1])
    probs = torch.zeros(5, 2, 3)
    probs[torch.arange(5), 0, torch.tensor(early)] = 0.8  # exit 0: the early answers
    probs[torch.arange(5), 1, torch.tensor(full)] = 1.0  # exit 1: the full-depth answers
    out = breakdowns(["a", "b", "c"], labels, full, early, probs,
                     {"text_source": ["ocr", "ocr", "text_layer", "text_layer", "none"]})
    ocr = out["breakdowns"]["text_source"]["ocr"]
    assert ocr["pages"] == 2 and ocr["full_depth_accuracy"] == 0.5
    assert ocr["exit_accuracy"] == [0.5, 0.5]
    assert ocr["exit_ece_calibrated"][1] == pytest.approx(0.5)  # confidence 1, half right
    assert out["breakdowns"]["class"]["c"]["early_exit_accuracy"] == 0.0
    assert out["confusion_matrix"]["full_depth"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert out["confusion_matrix"]["early_exit"] == [[1, 1, 0], [1, 1, 0], [0, 1, 0]]
    with pytest.raises(ValueError):
        breakdowns(["a", "b", "c"], labels, full, early, probs, {"source": ["x"]})


def test_document_source_from_manifest_synth_tag_or_folder(tmp_path):
    for name in ("a/one.pdf", "b/two.pdf", "c/three.pdf"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"%PDF-1.4")
    (tmp_path / "manifest.csv").write_text(
        "path,label,source,scanned\na/one.pdf,x,kleister,\nb/two.pdf,y,,1\nc/three.pdf,y,,\n")
    docs = {d.key: d.source for d in read_documents(tmp_path)}
    assert docs == {"a/one.pdf": "kleister", "b/two.pdf": "scanned", "c/three.pdf": "c"}
    (tmp_path / "manifest.csv").unlink()
    assert {d.source for d in read_documents(tmp_path)} == {"a", "b", "c"}  # class folders
