"""Budgets per image, page and document: a hostile input is refused (or cut) with its reason
before it costs more than an ordinary page does."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as raw
import pytest
from PIL import Image

from pipelines import images, ocr, pdf
from pipelines import pages as pages_mod
from pipelines.artifacts import decode_page, encode_page
from pipelines.errors import DocumentError
from pipelines.ocr import OcrResult
from pipelines.options import MIN_ARTIFACT_BYTES, IngestOptions
from pipelines.page_content import Page
from pipelines.pages import iter_pages
from pipelines.sniff import open_source
from tests.pipelines.pagedocs import (
    write_big_image_pdf,
    write_g4_tiff,
    write_inline_image_pdf,
    write_nested_forms_pdf,
    write_scan_pdf,
    write_text_bomb_pdf,
    write_text_pdf,
)


def test_text_bomb_pages_are_cut_to_the_word_budget(tmp_path):
    # 30,000 words: under the page-object budget, so the word budget is the one that acts.
    bomb = write_text_bomb_pdf(tmp_path / "bomb.pdf", pages=2, words=30_000)
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


# -- decoded pixels of any image -----------------------------------------------------------------


def _read(path, opts=None):
    """(page numbers read, DocumentError or None)."""
    got = []
    try:
        for page in iter_pages(path, options=opts):
            got.append(page.number)
    except DocumentError as exc:
        return got, exc
    return got, None


def test_embedded_image_over_the_budget_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    # 40000 x 40000 grey (1.6 GB decoded, ~5 KB on disk) on page 2: before the budget, pdfium
    # decoded it to render the page (9 s and 1.8 GB RSS). Now its declared size refuses the
    # document before any page is rendered.
    path = write_big_image_pdf(tmp_path / "big.pdf", lead_pages=1)
    renders = []
    real_render = pdf.render
    monkeypatch.setattr(pdf, "render", lambda *a, **k: renders.append(1) or real_render(*a, **k))
    t0 = time.perf_counter()
    pages, err = _read(path, IngestOptions(ocr_mode="text"))
    # A liveness bound, not a speed claim (no render is the check): refusing takes a fraction
    # of a second, decoding the image took 9 s; 5 s leaves room for a loaded machine.
    assert time.perf_counter() - t0 < 5
    assert pages == [] and renders == []
    assert err is not None and err.reason == (
        "embedded image 40000x40000 px (object 4) over the 60,000,000-pixel budget"
    )


def test_an_image_mask_counts_as_an_image(tmp_path, monkeypatch):
    # pdfium reports the 1x1 base image and decodes its /SMask at the mask's own size.
    path = write_big_image_pdf(tmp_path / "m.pdf", width=3000, height=2000, as_smask=True)
    assert _read(path, IngestOptions(ocr_mode="text"))[1] is None
    pages, err = _read(path, IngestOptions(ocr_mode="text", max_image_pixels=5_000_000))
    assert pages == [] and err is not None
    assert err.reason == "embedded image 3000x2000 px (object 8) over the 5,000,000-pixel budget"


def test_inline_image_is_checked_per_page_from_pdfium(tmp_path):
    # An inline image's size lives only in the compressed content stream: pdfium's page scan
    # reports it, and the page is refused before it is rendered.
    path = write_inline_image_pdf(tmp_path / "i.pdf", 3000, 2000)
    assert _read(path, IngestOptions(ocr_mode="text"))[0] == [1]
    pages, err = _read(path, IngestOptions(ocr_mode="text", max_image_pixels=5_000_000))
    assert pages == [] and err is not None and err.page == 1
    assert err.reason == "page 1: embedded image 3000x2000 px over the 5,000,000-pixel budget"


def test_embedded_image_budget_is_its_own_setting(tmp_path):
    path = write_big_image_pdf(tmp_path / "img.pdf", width=2000, height=1500)
    assert _read(path, IngestOptions(ocr_mode="text"))[1] is None  # 3 Mpx: within the default
    _, err = _read(path, IngestOptions(ocr_mode="text", max_image_pixels=2_999_999))
    assert err is not None
    assert "image 2000x1500 px (object 4) over the 2,999,999-pixel" in err.reason


def test_every_tiff_frame_is_checked_from_its_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "frames.tif"
    small, big = Image.new("1", (800, 1000), 1), Image.new("1", (3000, 4000), 1)
    small.save(path, format="TIFF", compression="group4", save_all=True,
               append_images=[big, small])
    decoded = []
    real = images.decoded_frame
    monkeypatch.setattr(images, "decoded_frame", lambda im: decoded.append(im.size) or real(im))
    pages, err = _read(path, IngestOptions(ocr_mode="text", max_image_pixels=5_000_000))
    assert pages == [1] and decoded == [(800, 1000)]  # frame 2 never decoded
    assert err is not None and err.page == 2
    assert err.reason == "page 2: image 3000x4000 px over the 5,000,000-pixel budget"


def test_pil_guard_follows_the_image_budget(tmp_path):
    path = write_g4_tiff(tmp_path / "g4.tif", frames=1, size=(3000, 3000))
    _read(path, IngestOptions(ocr_mode="text", max_image_pixels=4_000_000))
    assert Image.MAX_IMAGE_PIXELS == 4_000_000
    # More than twice the budget: PIL itself refuses while opening; still one clear line.
    _, err = _read(path, IngestOptions(ocr_mode="text", max_image_pixels=1_000_000))
    assert err is not None and err.page == 1
    assert "image too large to decode safely (over the 1,000,000-pixel budget" in err.reason
    _read(write_g4_tiff(tmp_path / "ok.tif", frames=1, size=(100, 100)), IngestOptions())
    assert Image.MAX_IMAGE_PIXELS == 60_000_000  # back to the default budget


def test_jpeg_orientation_is_still_applied_to_the_one_decoded_copy(tmp_path):
    im = Image.new("RGB", (600, 300), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    im.save(tmp_path / "r.jpg", exif=exif.tobytes(), dpi=(100, 100))
    page = next(iter_pages(tmp_path / "r.jpg", options=IngestOptions(ocr_mode="text")))
    assert (page.width, page.height) == (300, 600)


# -- objects per page ----------------------------------------------------------------------------


def test_text_bomb_page_is_refused_by_the_object_budget_before_its_text_page(tmp_path,
                                                                           monkeypatch):
    # 20 pages sharing one 300,000-word content stream: with only the word budget every page cost
    # ~1.5 s (text page, render, image walk). Now page 1 fails as soon as pdfium has parsed it.
    bomb = write_text_bomb_pdf(tmp_path / "bomb.pdf", pages=20, words=300_000)
    called = []
    monkeypatch.setattr(pages_mod, "extract_words", lambda *a, **k: called.append(1))
    monkeypatch.setattr(pdf, "render", lambda *a, **k: called.append(1))
    t0 = time.perf_counter()
    pages, err = _read(bomb)
    # A liveness bound (not a speed claim): ~0.3 s here, one page parse; 20 pages at ~1.5 s each
    # before the budget.
    assert time.perf_counter() - t0 < 10
    assert pages == [] and not called
    assert err is not None and err.page == 1
    assert err.reason == "page 1: 300,000 page objects over the 100,000-object budget"


def test_objects_inside_forms_count_too(tmp_path):
    path = write_text_bomb_pdf(tmp_path / "form.pdf", pages=1, words=3000, in_form=True)
    assert _read(path, IngestOptions(ocr_mode="text"))[1] is None
    _, err = _read(path, IngestOptions(ocr_mode="text", max_page_objects=2000))
    assert err is not None
    assert err.reason == "page 1: at least 3,001 page objects over the 2,000-object budget"


# -- artifact bytes per page ---------------------------------------------------------------------


def _artifact(words, image, max_bytes=None):
    boxes = [(i % 1000, 0, i % 1000, 10) for i in range(len(words))]
    page = Page(number=1, width=850, height=1100, image=image, words=words, boxes=boxes,
                text_source="text_layer")
    return encode_page(page, max_bytes=max_bytes)


def test_artifact_over_its_budget_keeps_the_first_words_that_fit():
    words = [f"word{i}" for i in range(20_000)]
    white = Image.new("RGB", (850, 1100), "white")
    full = _artifact(words, white)
    assert len(full) > 300_000
    assert _artifact(words, white, max_bytes=len(full)) == full  # within it: unchanged
    data = _artifact(words, white, max_bytes=100_000)
    assert 99_000 < len(data) <= 100_000
    art = decode_page(data)
    assert art.words == words[: len(art.words)] and 0 < len(art.words) < len(words)
    assert len(art.boxes) == len(art.words) and max(art.image.size) == 448


def test_artifact_raster_shrinks_only_when_it_alone_is_over_the_budget():
    noise = Image.frombytes("RGB", (850, 1100), np.random.default_rng(0).bytes(850 * 1100 * 3))
    assert len(_artifact([], noise)) > 500_000  # incompressible raster
    data = _artifact(["a", "b"], noise, max_bytes=MIN_ARTIFACT_BYTES)
    assert len(data) <= MIN_ARTIFACT_BYTES
    assert max(decode_page(data).image.size) < 448


# -- ingest seconds per document and OCR seconds per page ----------------------------------------


def test_ingest_deadline_stops_between_pages_and_keeps_what_was_read(tmp_path):
    path = write_text_pdf(tmp_path / "t.pdf", pages=3)
    got = []
    # The budget outlasts reading page 1 even cold on a busy machine (0.2 s did not, once, in
    # a fresh clone); the pause after it does not.
    with pytest.raises(DocumentError) as info:
        for page in iter_pages(path, options=IngestOptions(ocr_mode="text", max_ingest_s=1)):
            got.append(page.number)
            time.sleep(1.2)
    assert got == [1]
    assert info.value.reason.startswith("ingest over 1 s after page 1")


def test_ingest_deadline_covers_image_frames(tmp_path):
    path = tmp_path / "f.tif"
    frame = Image.new("L", (200, 300), 255)
    frame.save(path, format="TIFF", save_all=True, append_images=[frame, frame])
    got = []
    with pytest.raises(DocumentError, match=r"ingest over 1 s after page 2"):
        for page in iter_pages(path, options=IngestOptions(ocr_mode="text", max_ingest_s=1)):
            got.append(page.number)
            time.sleep(0.6)
    assert got == [1, 2]


def test_ocr_timeout_kills_tesseract_and_names_the_page(tmp_path, monkeypatch):
    # A tesseract that hangs: the page fails with the time-out, and the process is gone.
    fake = tmp_path / "tesseract"
    pidfile = tmp_path / "pid"
    fake.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setattr(ocr, "tesseract_cmd", lambda: str(fake))
    scan = write_scan_pdf(tmp_path / "s.pdf")
    t0 = time.perf_counter()
    pages, err = _read(scan, IngestOptions(ocr_mode="ocr", ocr_timeout_s=0.5))
    # A liveness bound: the 0.5-s time-out fires and tesseract is killed, where the fake one
    # would sleep 60 s; 10 s leaves room for a loaded machine.
    assert time.perf_counter() - t0 < 10
    assert pages == [] and err is not None and err.page == 1
    assert err.reason == "page 1: OCR timed out after 0.5 s"
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_ocr_words_fall_under_the_word_budget(tmp_path, monkeypatch):
    many = OcrResult([f"w{i}" for i in range(50)], [(0, 0, 1, 1)] * 50, 90.0)
    monkeypatch.setattr(pages_mod, "ocr_image", lambda *a, **k: many)
    scan = write_scan_pdf(tmp_path / "s.pdf")
    page = next(iter_pages(scan, options=IngestOptions(ocr_mode="ocr", max_page_words=10)))
    assert page.words == many.words[:10] and len(page.boxes) == 10
    assert "OCR words cut to the first 10" in page.reason


# -- settings ------------------------------------------------------------------------------------


def test_budget_settings_reach_the_ingest_options(monkeypatch):
    from doctriage.settings import Settings
    from doctriage.wiring import ingest_options

    for var, value in (("MAX_IMAGE_PIXELS", "123"), ("MAX_PAGE_OBJECTS", "456"),
                       ("MAX_ARTIFACT_BYTES", "70000"), ("MAX_INGEST_S", "7.5")):
        monkeypatch.setenv(f"DOCTRIAGE_{var}", value)
    opts = ingest_options(Settings())
    assert (opts.max_image_pixels, opts.max_page_objects) == (123, 456)
    assert (opts.max_artifact_bytes, opts.max_ingest_s) == (70000, 7.5)
    with pytest.raises(ValueError, match="max_artifact_bytes"):
        IngestOptions(max_artifact_bytes=MIN_ARTIFACT_BYTES - 1)
    with pytest.raises(ValueError, match="max_ingest_s"):
        IngestOptions(max_ingest_s=0)


def test_declared_sizes_are_read_through_references_and_name_escapes(tmp_path):
    # pdfium accepts "/Width 9 0 R" and "/W#69dth"; the raw-bytes scan must read both.
    path = write_big_image_pdf(tmp_path / "r.pdf", width=3000, height=2000)
    data = path.read_bytes()
    data = data.replace(b"/Width 3000 /Height 2000", b"/W#69dth 99 0 R /Height    2000", 1)
    data = data.replace(b"trailer", b"99 0 obj\n3000\nendobj\ntrailer", 1)  # after the xref
    path.write_bytes(data)
    src = open_source(path, path.name, 10**9)
    assert (4, 3000, 2000) in list(pdf.declared_image_sizes(src))
    _, err = _read(path, IngestOptions(ocr_mode="text", max_image_pixels=5_000_000))
    assert err is not None and "image 3000x2000 px (object 4)" in err.reason


# -- memory and time of pdfium's own parse (pipelines/parse_check.py) ----------------------------


def test_forms_drawn_over_and_over_are_refused_within_the_parse_budget(tmp_path):
    # 10 x 10 x ... (5 deep) copies of one word: pdfium builds all 100,000 when the page loads
    # (~200 MB; 6 deep 1.7 GB, 7 deep ~17 GB, from 2 KB files). The parse runs in a watched
    # child that is killed past the budget; this process never parses the page.
    path = write_nested_forms_pdf(tmp_path / "n.pdf", levels=5)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    opts = IngestOptions(ocr_mode="text", max_page_objects=10**9, max_parse_mb=32)
    pages, err = _read(path, opts)
    assert pages == [] and err is not None and err.page == 1
    assert err.reason.startswith("page 1: parsing it takes over 32 MB (the parse budget")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
    assert _read(write_nested_forms_pdf(tmp_path / "ok.pdf", levels=3), opts) == ([1], None)


def test_a_parse_that_runs_past_the_ingest_deadline_is_stopped(tmp_path):
    path = write_nested_forms_pdf(tmp_path / "n.pdf", levels=5)
    opts = IngestOptions(ocr_mode="text", max_page_objects=10**9, max_ingest_s=0.05)
    t0 = time.perf_counter()
    _, err = _read(path, opts)
    # A liveness bound: the parse is stopped at its 0.05-s deadline instead of running on;
    # 5 s leaves room for a loaded machine.
    assert time.perf_counter() - t0 < 5
    assert err is not None and err.reason == "ingest over 0.05 s while parsing page 1"


def test_the_parse_check_leaves_a_callers_stream_where_it_was(tmp_path):
    # The check's child reads the file through its own handle: the caller's buffered stream
    # must read the same pages afterwards.
    path = write_text_pdf(tmp_path / "t.pdf", pages=3)
    from_path = [p.words for p in iter_pages(path, options=IngestOptions(ocr_mode="text"))]
    with open(path, "rb", buffering=64) as fh:
        from_stream = [p.words for p in iter_pages(fh, name="t.pdf",
                                                   options=IngestOptions(ocr_mode="text"))]
    assert from_stream == from_path and len(from_path) == 3


def test_the_parse_child_dies_with_a_killed_worker(tmp_path):
    # A worker SIGKILLed mid-check must not leave its child parsing with nobody to stop it.
    path = write_nested_forms_pdf(tmp_path / "n.pdf", levels=6)  # ~3.5 s of parsing
    code = ("import sys; from pipelines.pages import iter_pages; "
            "from pipelines.options import IngestOptions as O; "
            "list(iter_pages(sys.argv[1], options=O(max_page_objects=10**9, max_parse_mb=10**5)))")
    worker = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=Path.cwd())
    try:
        children: list[str] = []
        deadline = time.monotonic() + 30
        while not children and time.monotonic() < deadline:
            time.sleep(0.05)
            task = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
            children = task.read_text().split() if task.exists() else []
        assert children, "the check's child never started"
        worker.kill()
        worker.wait()
        child = int(children[0])
        time.sleep(0.5)
        status = Path(f"/proc/{child}/status")
        state = status.read_text().split("State:")[1].split()[0] if status.exists() else "gone"
        assert state in ("Z", "gone")  # killed with its parent (a zombie until init reaps it)
    finally:
        if worker.poll() is None:
            worker.kill()
