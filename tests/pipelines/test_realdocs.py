"""Real documents: born-digital pages come from the text layer with their text; scans are OCRed."""

from __future__ import annotations

import collections
import io
import re
import subprocess
from pathlib import Path

import pytest

from pipelines.pages import IngestOptions, count_pages, iter_pages, plan_pages

TEXT = IngestOptions(ocr_mode="text")


def pdftotext_words(path: Path, page: int) -> list[str]:
    """Words of one page according to poppler, an extractor independent of ours."""
    out = subprocess.run(
        ["pdftotext", "-layout", "-f", str(page), "-l", str(page), str(path), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def word_f1(a: list[str], b: list[str]) -> float:
    ca, cb = collections.Counter(a), collections.Counter(b)
    hit = sum((ca & cb).values())
    if not hit:
        return 0.0
    p, r = hit / sum(ca.values()), hit / sum(cb.values())
    return 2 * p * r / (p + r)


@pytest.mark.parametrize("source", ["resumescraper", "kleister-nda"])
def test_born_digital_pages_come_from_the_text_layer_with_their_text(by_source, source):
    for path in by_source(source)[:3]:
        pages = list(iter_pages(path))
        assert len(pages) == count_pages(path)
        for page in pages:
            assert page.text_source == "text_layer", (path.name, page.number, page.reason)
            assert page.image.mode == "RGB" and page.image.size == (page.width, page.height)
            assert len(page.words) == len(page.boxes) > 0
            assert all(0 <= v <= 1000 for box in page.boxes for v in box)
            assert all(x0 <= x1 and y0 <= y1 for x0, y0, x1, y1 in page.boxes)
            # Same words as poppler finds (its own word splitting differs a little: >= 0.9).
            f1 = word_f1(page.words, pdftotext_words(path, page.number))
            assert f1 > 0.9, (path.name, page.number, f1)


def test_text_layer_reading_order_and_boxes_match_the_page(by_source):
    path = by_source("kleister-nda")[0]
    page = next(iter_pages(path))
    # The first line of the NDA, read left to right, top of the page.
    assert page.words[:3] == ["EX-10.2", "3", "dex102.htm"]
    assert page.boxes[0][1] < 100
    # Lines run top to bottom: no word sits above the line of the word before it.
    for (_, t0, _, b0), (_, t1, _, b1) in zip(page.boxes, page.boxes[1:], strict=False):
        assert (t1 + b1) / 2 >= (t0 + b0) / 2 - max(b0 - t0, b1 - t1)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("funsd-0000989556.png", {"RESTRICTED", "TOBACCO", "PRODUCT"}),
    ],
)
def test_funsd_scan_is_ocred_with_words(realdocs_dir, name, expected):
    (page,) = list(iter_pages(realdocs_dir / "form" / name))
    assert page.text_source == "ocr"
    assert len(page.words) > 100 and len(page.words) == len(page.boxes)
    assert expected <= set(page.words)
    assert page.ocr_conf is not None and page.ocr_conf > 70


def test_sroie_receipt_is_ocred_with_words(by_source):
    path = by_source("sroie")[1]
    (page,) = list(iter_pages(path))
    assert page.text_source == "ocr"
    assert len(page.words) > 40
    # Receipts print amounts: OCR must find some of them.
    assert any(re.fullmatch(r"\d+\.\d\d", w) for w in page.words), page.words


def test_funsd_and_sroie_pages_are_decided_ocr(by_source):
    # The decision alone (no OCR): a sample of 8 + 8 keeps this quick; bench/ingest.py does all.
    for path in by_source("funsd")[::5] + by_source("sroie")[::10]:
        assert [p.text_source for p in plan_pages(path)] == ["ocr"], path.name


def test_registration_scan_with_only_a_metadata_layer_is_ocred(realdocs_dir):
    # A 1967 FARA form: a 1-bit scan whose text layer is a hidden metadata block (~1000 chars)
    # that covers under a tenth of what is printed.
    path = next((realdocs_dir / "form").glob("vrdu-registration-19670901_JETRO*"))
    first = next(iter_pages(path))
    assert first.text_source == "ocr", first.reason
    assert first.coverage is not None and first.coverage < 0.25
    assert {"UNITED", "STATES", "DEPARTMENT"} <= set(first.words)
    assert [p.text_source for p in plan_pages(path)] == ["ocr", "ocr"]


def test_registration_scans_split_by_how_much_their_layer_covers(by_source):
    decisions = collections.Counter()
    for path in by_source("vrdu-registration"):
        for page in plan_pages(path):
            decisions[page.text_source] += 1
            if page.text_source == "text_layer" and page.reason != "born-digital":
                assert page.coverage >= 0.4
    # Old filings (stamp/metadata layers) need OCR, recent ones carry a full OCR layer.
    assert decisions["ocr"] >= 25 and decisions["text_layer"] >= 40, decisions


def test_streams_give_the_same_pages_as_paths(by_source):
    path = by_source("resumescraper")[0]
    from_path = [(p.words, p.boxes) for p in iter_pages(path, options=TEXT)]
    with open(path, "rb") as fh:
        from_file = [(p.words, p.boxes) for p in iter_pages(fh, name="r.pdf", options=TEXT)]
    data = path.read_bytes()

    class Pipe(io.RawIOBase):  # a non-seekable stream, as from a socket
        def __init__(self) -> None:
            self._buf = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            return self._buf.readinto(b)

    from_pipe = [(p.words, p.boxes) for p in iter_pages(Pipe(), options=TEXT)]
    assert from_path == from_file == from_pipe


def test_modes_force_or_forbid_ocr(realdocs_dir, by_source):
    (page,) = list(iter_pages(realdocs_dir / "form" / "funsd-0000989556.png", options=TEXT))
    assert (page.text_source, page.reason, page.words) == ("none", "image: no text layer", [])
    path = by_source("resumescraper")[0]
    plan = list(plan_pages(path, options=IngestOptions(ocr_mode="ocr")))
    assert [p.text_source for p in plan] == ["ocr"] * len(plan)


def test_dpi_sets_the_raster_size(by_source):
    path = by_source("kleister-nda")[0]
    p100 = next(iter_pages(path, options=IngestOptions(dpi=100, ocr_mode="text")))
    p50 = next(iter_pages(path, options=IngestOptions(dpi=50, ocr_mode="text")))
    assert p100.size_pt == p50.size_pt
    assert abs(p100.width - round(p100.size_pt[0] * 100 / 72)) <= 1
    assert abs(p50.width * 2 - p100.width) <= 2
    assert p50.words == p100.words
