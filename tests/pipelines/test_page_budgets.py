"""Per-page budgets: a hostile text layer is read up to the word budget, and the page says so."""

from __future__ import annotations

import pypdfium2 as pdfium
import pypdfium2.raw as raw
import pytest

from pipelines import pdf
from pipelines.options import IngestOptions
from pipelines.pages import iter_pages
from tests.pipelines.pagedocs import write_scan_pdf, write_text_bomb_pdf, write_text_pdf


def test_text_bomb_pages_are_cut_to_the_word_budget(tmp_path):
    bomb = write_text_bomb_pdf(tmp_path / "bomb.pdf", pages=2, words=300_000)
    opts = IngestOptions(max_page_words=1000)
    pages = list(iter_pages(bomb, options=opts))
    assert [len(p.words) for p in pages] == [1000, 1000]
    assert all(len(p.boxes) == 1000 for p in pages)
    assert all(p.text_source == "text_layer" for p in pages)
    assert all("cut to its first 1000 words" in p.reason for p in pages)


def test_a_page_within_the_budget_keeps_every_word(tmp_path):
    doc = write_text_pdf(tmp_path / "t.pdf")
    full = next(iter_pages(doc, options=IngestOptions(ocr_mode="text")))
    assert full.words and "cut to" not in full.reason
    tight = next(iter_pages(doc, options=IngestOptions(ocr_mode="text",
                                                       max_page_words=len(full.words))))
    assert tight.words == full.words


def test_options_refuse_a_zero_word_budget():
    with pytest.raises(ValueError, match="max_page_words"):
        IngestOptions(max_page_words=0)


def _image_area_by_wrappers(page: pdfium.PdfPage) -> float:
    # The former implementation (pypdfium2's object wrappers), kept as the reference.
    left, bottom, right, top = page.get_cropbox()
    n = pdf._IMAGE_GRID
    cells = set()
    for obj in page.get_objects(filter=[raw.FPDF_PAGEOBJ_IMAGE], max_depth=8):
        x0, y0, x1, y1 = obj.get_bounds()
        for r in range(max(0, int((y0 - bottom) // ((top - bottom) / n))),
                       min(n, -int(-(y1 - bottom) // ((top - bottom) / n)))):
            for c in range(max(0, int((x0 - left) // ((right - left) / n))),
                           min(n, -int(-(x1 - left) // ((right - left) / n)))):
                cells.add((r, c))
    return len(cells) / (n * n)


def test_image_area_matches_the_object_wrappers(tmp_path):
    for path in (write_scan_pdf(tmp_path / "s.pdf"), write_text_pdf(tmp_path / "t.pdf")):
        doc = pdfium.PdfDocument(str(path))
        try:
            page = doc[0]
            assert pdf.image_area(page) == pytest.approx(_image_area_by_wrappers(page))
            page.close()
        finally:
            doc.close()
    doc = pdfium.PdfDocument(str(tmp_path / "s.pdf"))
    assert pdf.image_area(doc[0]) > 0.9
    doc.close()
