"""The synthetic corpus: layout on disk, manifest, determinism, text layer vs image-only, CLI."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from typer.testing import CliRunner

from pipelines.synth import CLASSES, MANIFEST_COLUMNS, generate_corpus, make_document
from pipelines.synth.corpus import scanned_indices

RVL_CDIP = [
    "letter",
    "memo",
    "email",
    "form",
    "questionnaire",
    "invoice",
    "budget",
    "resume",
    "scientific_report",
    "scientific_publication",
    "specification",
    "news_article",
    "advertisement",
    "presentation",
    "file_folder",
    "handwritten",
]


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two documents per class, half of them scanned (one of each kind per class)."""
    out = tmp_path_factory.mktemp("synth")
    generate_corpus(out, 2, 7, scanned_fraction=0.5, progress=False)
    return out


def _text_chars(pdf: pdfium.PdfDocument) -> list[int]:
    counts = []
    for i in range(len(pdf)):
        tp = pdf[i].get_textpage()
        counts.append(tp.count_chars())
        tp.close()
    return counts


def test_classes_are_the_16_rvl_cdip_names() -> None:
    assert list(CLASSES) == RVL_CDIP


def test_manifest_columns_paths_and_counts(corpus: Path) -> None:
    rows = _rows(corpus / "manifest.csv")
    assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
    assert {"path", "label", "scanned", "pages", "seed"} <= set(rows[0])
    assert len(rows) == 2 * 16
    for label in RVL_CDIP:
        mine = [r for r in rows if r["label"] == label]
        assert [r["path"] for r in mine] == [
            f"{label}/{label}-0000.pdf",
            f"{label}/{label}-0001.pdf",
        ]
        assert sorted(r["scanned"] for r in mine) == ["0", "1"]
    for r in rows:
        data = (corpus / r["path"]).read_bytes()
        assert data.startswith(b"%PDF")
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        assert int(r["bytes"]) == len(data)


def test_page_counts_in_manifest_match_the_pdfs(corpus: Path) -> None:
    for r in _rows(corpus / "manifest.csv"):
        pdf = pdfium.PdfDocument(corpus / r["path"])
        assert len(pdf) == int(r["pages"]), r["path"]
        assert 1 <= len(pdf) <= 4
        if r["scanned"] == "1":
            assert len(pdf) <= 2, "scanned documents stay short (they are OCR'd)"
        pdf.close()


def test_scanned_docs_are_image_only_and_born_digital_have_text(corpus: Path) -> None:
    for r in _rows(corpus / "manifest.csv"):
        pdf = pdfium.PdfDocument(corpus / r["path"])
        chars = _text_chars(pdf)
        if r["scanned"] == "1":
            assert chars == [0] * len(pdf), r["path"]
            kinds = {obj.type for obj in pdf[0].get_objects()}
            assert kinds == {pdfium_c.FPDF_PAGEOBJ_IMAGE}, r["path"]
        else:
            assert all(n > 0 for n in chars), (r["path"], chars)
        pdf.close()


def test_same_seed_gives_byte_identical_corpus(corpus: Path, tmp_path: Path) -> None:
    again = generate_corpus(tmp_path / "again", 2, 7, scanned_fraction=0.5, progress=False)
    assert again.read_bytes() == (corpus / "manifest.csv").read_bytes()
    for r in _rows(again):
        assert (tmp_path / "again" / r["path"]).read_bytes() == (corpus / r["path"]).read_bytes()


def test_different_seed_gives_different_documents(corpus: Path, tmp_path: Path) -> None:
    other = _rows(generate_corpus(tmp_path / "other", 2, 8, scanned_fraction=0.5, progress=False))
    base = {r["path"]: r["sha256"] for r in _rows(corpus / "manifest.csv")}
    assert all(base[r["path"]] != r["sha256"] for r in other)


def test_document_is_a_pure_function_of_label_seed_and_kind() -> None:
    for scanned in (False, True):
        a = make_document("invoice", 12345, scanned)
        assert a == make_document("invoice", 12345, scanned)
        assert a != make_document("invoice", 12346, scanned)


def test_scanned_fraction_and_class_subset(tmp_path: Path) -> None:
    none = _rows(
        generate_corpus(
            tmp_path / "a", 3, 1, scanned_fraction=0.0, classes=["memo", "budget"], progress=False
        )
    )
    assert [r["label"] for r in none] == ["memo"] * 3 + ["budget"] * 3
    assert all(r["scanned"] == "0" for r in none)
    every = _rows(
        generate_corpus(
            tmp_path / "b", 2, 1, scanned_fraction=1.0, classes=["handwritten"], progress=False
        )
    )
    assert all(r["scanned"] == "1" for r in every)


def test_scanned_count_is_the_fraction_rounded_half_up() -> None:
    assert len(scanned_indices("memo", 10, 1, 0.3)) == 3
    assert len(scanned_indices("memo", 1, 1, 0.5)) == 1
    assert len(scanned_indices("memo", 5, 1, 0.3)) == 2
    assert scanned_indices("memo", 10, 1, 0.3) == scanned_indices("memo", 10, 1, 0.3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_class": 0}, "per_class"),
        ({"scanned_fraction": 1.5}, "scanned_fraction"),
        ({"classes": ["memo", "receipt"]}, "receipt"),
        ({"classes": ["memo", "memo"]}, "distinct"),
        ({"classes": []}, "non-empty"),
    ],
)
def test_generate_corpus_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"per_class": 1, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_corpus(tmp_path, args.pop("per_class"), args.pop("seed"), progress=False, **args)


# -- CLI -----------------------------------------------------------------------------------------
def _cli(args: list[str]):
    from doctriage.cli import app

    return CliRunner().invoke(app, args)


def test_cli_writes_corpus_and_prints_one_line_summary(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    result = _cli(
        [
            "synth",
            str(out),
            "--per-class",
            "1",
            "--seed",
            "5",
            "--scanned-fraction",
            "0",
            "--classes",
            "letter,presentation",
        ]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("synth: 2 documents (0 scanned), ")
    assert " pages, " in lines[0] and " s -> " in lines[0]
    assert [r["path"] for r in _rows(out / "manifest.csv")] == [
        "letter/letter-0000.pdf",
        "presentation/presentation-0000.pdf",
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["--per-class", "0"],
        ["--per-class", "1", "--scanned-fraction", "2"],
        ["--per-class", "1", "--classes", "letter,receipt"],
        ["--per-class", "1", "--classes", "memo,memo"],
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path: Path, args: list[str]) -> None:
    result = _cli(["synth", str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_cli_non_integer_count_is_a_usage_error(tmp_path: Path) -> None:
    result = _cli(["synth", str(tmp_path / "out"), "--per-class", "many"])
    assert result.exit_code == 2
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_file_as_output(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    result = _cli(["synth", str(target), "--per-class", "1"])
    assert result.exit_code == 2
    assert "not a folder" in result.stderr
