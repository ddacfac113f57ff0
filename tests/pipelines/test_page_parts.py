"""The parts behind iter_pages: kind sniffing, boxes on rotated/cropped pages, reading order, the
text-layer-or-OCR decision, tesseract TSV parsing."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw
from reportlab.pdfgen import canvas

from pipelines.coverage import decide, ink_mask, text_coverage
from pipelines.ocr import parse_tsv
from pipelines.options import IngestOptions
from pipelines.pages import DocumentError, detect_kind, iter_pages
from pipelines.reading_order import sort_reading_order

TEXT = IngestOptions(ocr_mode="text")


@pytest.mark.parametrize(
    "head,kind",
    [
        (b"%PDF-1.7\n", "pdf"),
        (b"\n\n  junk first %PDF-1.4", "pdf"),
        (b"\x89PNG\r\n\x1a\n....", "png"),
        (b"\xff\xd8\xff\xe0....", "jpeg"),
        (b"II*\x00....", "tiff"),
        (b"MM\x00*....", "tiff"),
        (b"PK\x03\x04 a zip", None),
        (b"", None),
    ],
)
def test_detect_kind_by_magic_bytes(head, kind):
    assert detect_kind(head) == kind


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_boxes_sit_on_the_ink_of_rotated_and_cropped_pages(tmp_path, rotation):
    path = tmp_path / f"rot{rotation}.pdf"
    c = canvas.Canvas(str(path), pagesize=(600, 600))  # square: reportlab swaps sides on rotation
    c.setPageRotation(rotation)
    c.setFont("Helvetica", 16)
    c.drawString(60, 520, "Top left corner words")
    c.drawString(300, 80, "Bottom right words")
    c.setCropBox((20, 30, 580, 570))  # an offset crop box moves the origin
    c.showPage()
    c.save()
    (page,) = list(iter_pages(path, options=TEXT))
    expected = ["Top", "left", "corner", "words", "Bottom", "right", "words"]
    if rotation == 0:
        assert page.words == expected
    assert sorted(page.words) == sorted(expected)
    ink = ink_mask(page.image)
    assert text_coverage(ink, page.boxes) > 0.97  # every dark pixel lies inside a word box
    # and every box holds ink: none of them points at an empty part of the page
    h, w = ink.shape
    for x0, y0, x1, y1 in page.boxes:
        region = ink[y0 * h // 1000 : y1 * h // 1000 + 1, x0 * w // 1000 : x1 * w // 1000 + 1]
        assert region.any()
    # crop box 560 x 540 pt at 100 dpi, sides swapped when the page is turned a quarter
    assert (page.width > page.height) == (rotation in (0, 180))


def test_reading_order_lines_then_left_to_right():
    words = ["world", "Hello", "line", "second", "sup"]
    boxes = [
        (300, 100, 400, 130),
        (100, 102, 250, 132),
        (260, 200, 330, 230),
        (100, 201, 240, 229),
        (410, 95, 430, 110),
    ]
    got, got_boxes = sort_reading_order(words, boxes)
    assert got == ["Hello", "world", "sup", "second", "line"]
    assert got_boxes[0] == (100, 102, 250, 132)


def blank(size=(200, 300)) -> Image.Image:
    return Image.new("RGB", size, "white")


def test_decide_text_layer_or_ocr():
    page = blank()
    draw = ImageDraw.Draw(page)
    draw.rectangle((20, 20, 180, 280), fill="black")  # a page full of 'content'
    small_box = [(100, 66, 900, 100)]  # a stamp line covering a sliver of it
    full_box = [(100, 66, 900, 933)]
    opts = IngestOptions()
    args = (opts.min_text_coverage, opts.scan_image_area)
    assert decide("auto", small_box, page, 1.0, *args).text_source == "ocr"
    assert decide("auto", full_box, page, 1.0, *args).text_source == "text_layer"
    # Born-digital (no page-sized image): the text layer is kept whatever the ink says.
    assert decide("auto", small_box, page, 0.0, *args).text_source == "text_layer"
    assert decide("auto", [], page, 0.0, *args).reason == "no text layer"
    assert decide("auto", [], blank(), 1.0, *args).reason == "blank page"
    assert decide("ocr", full_box, page, 0.0, *args).text_source == "ocr"
    assert decide("text", [], page, 1.0, *args).text_source == "text_layer"


def test_parse_tsv_keeps_confident_words_normalised():
    tsv = (
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"
        "1\t1\t0\t0\t0\t0\t0\t0\t200\t100\t-1\t\n"
        "5\t1\t1\t1\t1\t1\t10\t20\t40\t10\t96.5\tTotal\n"
        "5\t1\t1\t1\t1\t2\t60\t20\t30\t10\t12.0\t~\n"
        "5\t1\t1\t1\t1\t3\t100\t20\t50\t10\t91\t$12.50\n"
    )
    result = parse_tsv(tsv, 200, 100, min_conf=30)
    assert result.words == ["Total", "$12.50"]
    assert result.boxes == [(50, 200, 250, 300), (500, 200, 750, 300)]
    assert result.mean_conf == pytest.approx(93.75)


def test_document_error_is_one_line():
    err = DocumentError("a.pdf", "bad\nthing  happened", page=3)
    assert str(err) == "a.pdf: bad thing happened" and err.page == 3 and err.name == "a.pdf"


def test_options_are_validated():
    with pytest.raises(ValueError):
        IngestOptions(ocr_mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        IngestOptions(dpi=0)


def test_ocr_page_segmentation_mode_reaches_tesseract(monkeypatch):
    """DOCTRIAGE_OCR_PSM: the mode tesseract runs with; modes that read no page are refused."""
    import subprocess

    from pipelines import ocr

    img = Image.new("L", (900, 200), 255)
    ImageDraw.Draw(img).text((40, 80), "INVOICE TOTAL DUE", fill=0, font_size=48)
    calls: list[list[str]] = []
    real_run = subprocess.run

    def spy(args, **kwargs):
        calls.append(list(args))
        return real_run(args, **kwargs)

    monkeypatch.setattr(ocr.subprocess, "run", spy)
    for psm in (3, 6, 11):
        got = ocr.ocr_image(img, ocr.OcrSettings(psm=psm))
        assert "INVOICE" in got.words, (psm, got.words)
        assert calls[-1][calls[-1].index("--psm") + 1] == str(psm)
    with pytest.raises(ValueError, match="ocr_psm"):
        IngestOptions(ocr_psm=7)
    monkeypatch.setenv("DOCTRIAGE_OCR_PSM", "6")
    from doctriage.settings import Settings
    from doctriage.wiring import ingest_options

    assert ingest_options(Settings()).ocr_psm == 6
