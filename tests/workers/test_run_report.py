"""`doctriage run` tells the user what each document is, fails honestly and warns when the model
does not fit the documents: the real command in a subprocess, on a tiny synthetic corpus, a
corrupt PDF and tiny model bundles."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from modelkit import build_tiny_bundle

from pipelines.synth import CLASSES, generate_corpus
from workers.run_report import LabelSpan, PageReport, display_name, label_spans

DOCTRIAGE = str(Path(sys.executable).parent / "doctriage")


def doctriage(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCTRIAGE, *args], capture_output=True, text=True, timeout=600,
        env={**os.environ, "DOCTRIAGE_HOME": str(home), **env},
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two born-digital synth documents (invoice/, letter/) and a corrupt PDF beside them."""
    folder = tmp_path_factory.mktemp("corpus") / "docs"
    generate_corpus(folder, 1, 3, scanned_fraction=0.0, classes=("invoice", "letter"),
                    progress=False)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    return folder


@pytest.fixture(scope="module")
def synth_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose classes are synth's 16 (no corpus metadata): taken as synthetic-trained."""
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "synth", labels=CLASSES)


def foreign_pdf(path: Path) -> Path:
    """A PDF `doctriage synth` did not write (reportlab, no synth Creator)."""
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, invariant=1)
    c.drawString(72, 720, "Receipt 0042 total paid cash thank you for shopping")
    c.showPage()
    c.save()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def test_each_document_is_reported_and_a_failure_sets_the_exit_status(
    corpus: Path, synth_bundle: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    # A bar no page falls under: only the origin of the documents can warn here, and a synth
    # corpus under a synthetic-trained model must not.
    quiet = {"DOCTRIAGE_REROUTE_BELOW": "0.01", "DOCTRIAGE_AUDIT_FRACTION": "0"}
    first = doctriage(home, "run", str(corpus), "--model", str(synth_bundle), "--json", **quiet)
    assert first.returncode == 1, first.stderr  # broken.pdf failed
    assert "warning:" not in first.stderr
    summary = json.loads(first.stdout)
    docs = {d["name"]: d for d in summary["per_document"]}
    assert sorted(docs) == ["broken.pdf", "invoice/invoice-0000.pdf", "letter/letter-0000.pdf"]
    assert docs["broken.pdf"]["state"] == "FAILED" and "truncated" in docs["broken.pdf"]["error"]
    for name in ("invoice/invoice-0000.pdf", "letter/letter-0000.pdf"):
        d = docs[name]
        assert d["state"] == "DONE" and not d["already_classified"] and d["seconds"] > 0
        assert d["uri"].startswith("file://") and d["page_count"] == len(d["pages"]) >= 1
        assert [p["page"] for p in d["pages"]] == list(range(1, d["page_count"] + 1))
        for p in d["pages"]:
            assert p["label"] in CLASSES and 0 < p["confidence"] <= 1
            assert p["text_source"] == "text_layer" and 0 <= p["exit_stage"] <= 4
            assert p["exit_layer"] >= p["exit_stage"] and p["rerouted"] is False
        assert d["lowest_confidence"] == min(p["confidence"] for p in d["pages"])
        assert d["text_sources"] == {"text_layer": d["page_count"]}
        assert sum(d["exit_stages"].values()) == d["page_count"]
        covered = [n for s in d["labels"] for n in range(s["first_page"], s["last_page"] + 1)]
        assert covered == [p["page"] for p in d["pages"]]
    assert summary["documents"] == 3 and summary["documents_already_classified"] == 0

    # Again: nothing new, said so; the earlier failure still counts, unless allowed.
    again = doctriage(home, "run", str(corpus), "--model", str(synth_bundle), "--allow-failures",
                      **quiet)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert "nothing new: 3 documents already classified" in again.stdout
    assert not any(line.startswith("pages/s:") for line in lines)
    assert "documents: 3 (3 already classified, 1 failed)" in lines
    by_name = {line.split()[0]: line for line in lines if line.startswith(("broken", "invoice/",
                                                                           "letter/"))}
    assert sorted(by_name) == sorted(docs)
    assert "FAILED" in by_name["broken.pdf"]
    invoice = docs["invoice/invoice-0000.pdf"]
    assert f"min conf {invoice['lowest_confidence']:.2f}" in by_name["invoice/invoice-0000.pdf"]
    assert "(from an earlier run)" in by_name["invoice/invoice-0000.pdf"]
    strict = doctriage(home, "run", str(corpus / "broken.pdf"), "--model", str(synth_bundle))
    assert strict.returncode == 1 and "failed: broken.pdf: truncated PDF" in strict.stdout


def test_synthetic_trained_model_on_other_documents_warns_once(
    corpus: Path, synth_bundle: Path, tmp_path: Path
) -> None:
    receipt = foreign_pdf(tmp_path / "in" / "till receipt.pdf")
    out = doctriage(tmp_path / "home", "run", str(receipt), str(corpus / "invoice"),
                    "--model", str(synth_bundle), DOCTRIAGE_REROUTE_BELOW="0.01")
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, out.stderr
    assert "16 synthetic classes" in warnings[0] and "1 of the 2 documents" in warnings[0]
    assert "doctriage train DATA --out MODEL" in warnings[0]
    assert any(line.startswith("till receipt.pdf ") for line in out.stdout.splitlines())


def test_most_pages_below_the_reroute_bar_warns(
    corpus: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    out = doctriage(tmp_path / "home", "run", str(corpus / "invoice"), str(corpus / "letter"),
                    "--model", str(tiny_bundle), "--json", DOCTRIAGE_REROUTE_BELOW="0.99")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    (warning,) = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert "below the re-route bar (0.99)" in warning and "doctriage train" in warning
    assert summary["warnings"] == [warning]
    pages = [p for d in summary["per_document"] for p in d["pages"]]
    unsure = [p for p in pages if p["early_confidence"] < 0.99]
    assert len(unsure) * 2 > len(pages)
    for p in unsure:  # re-routed: the final label is the full-depth one, the stage the early one
        assert p["rerouted"] and p["label"] == p["full_depth_label"] is not None
        assert p["confidence"] == p["full_depth_confidence"] and p["exit_stage"] is not None
    assert {d["name"] for d in summary["per_document"]} == {"invoice-0000.pdf", "letter-0000.pdf"}


def test_synthetic_training_is_read_from_the_bundle_metadata(tmp_path: Path) -> None:
    from classifier.bundle import load_bundle
    from workers.model_fit import trained_on_synthetic

    flagged = build_tiny_bundle(tmp_path / "flagged", metadata={"corpus": {"kind": "synthetic"}})
    plain = build_tiny_bundle(tmp_path / "plain")
    assert trained_on_synthetic(load_bundle(flagged))
    assert not trained_on_synthetic(load_bundle(plain))


def test_names_are_relative_and_decoded(tmp_path: Path) -> None:
    folder = tmp_path / "in box"
    (folder / "sub").mkdir(parents=True)
    doc = folder / "sub" / "a b%.pdf"
    doc.write_bytes(b"x")
    uri = doc.resolve().as_uri()
    assert "%20" in uri
    assert display_name(uri, [str(folder)]) == "sub/a b%.pdf"
    assert display_name(uri, [str(doc)]) == "a b%.pdf"  # a file given by itself
    assert display_name("s3://b/batch/x/y%25.pdf", ["s3://b/batch/"]) == "x/y%.pdf"
    assert display_name("s3://b/batch2/y.pdf", ["s3://b/batch"]) == "y.pdf"
    assert display_name("file:///in/evil%0Aname.pdf") == "evil\\nname.pdf"


def test_label_spans_group_consecutive_pages() -> None:
    def page(n: int, label: str | None, state: str = "DONE") -> PageReport:
        return PageReport(
            page=n, state=state, label=label, confidence=None, exit_stage=None, exit_layer=None,
            early_label=None, early_confidence=None, rerouted=False, full_depth_label=None,
            full_depth_confidence=None, text_source="text_layer", error=None,
        )

    pages = [page(1, "invoice"), page(2, "invoice"), page(3, "letter"), page(4, None, "FAILED"),
             page(5, "invoice")]
    assert label_spans(pages) == [
        LabelSpan("invoice", 1, 2), LabelSpan("letter", 3, 3), LabelSpan("failed", 4, 4),
        LabelSpan("invoice", 5, 5),
    ]


@pytest.mark.parametrize("scanned", [False, True])
def test_synth_documents_say_who_made_them(scanned: bool, tmp_path: Path) -> None:
    from pipelines.synth import make_document
    from pipelines.synth.origin import made_by_synth

    pdf, _ = make_document("memo", 11, scanned)
    assert made_by_synth(io.BytesIO(pdf), "memo.pdf")
    assert make_document("memo", 11, scanned)[0] == pdf  # still the same bytes per seed
    other = foreign_pdf(tmp_path / "other.pdf")
    assert not made_by_synth(io.BytesIO(other.read_bytes()), "other.pdf")
    assert not made_by_synth(io.BytesIO(b"%PDF-1.4\nbroken"), "broken.pdf")
