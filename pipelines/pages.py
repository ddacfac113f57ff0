"""Documents in, pages out: `iter_pages` yields one `Page` at a time with its raster, its words and
their boxes (0-1000, reading order), taken from the PDF text layer or from tesseract, per page.

    for page in iter_pages("scan.pdf", options=IngestOptions(dpi=100)):
        page.number, page.text_source, page.words[:5]

A bad document raises `DocumentError` ("<name>: <reason>") where the problem is found; pages
before it have already been yielded. Only one page's rasters are alive at a time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from pipelines import images, parse_check, pdf
from pipelines.coverage import Decision, decide
from pipelines.errors import DocumentError
from pipelines.ocr import OcrFailed, OcrResult, OcrSettings, OcrTimeout, ocr_image
from pipelines.options import IngestOptions
from pipelines.page_content import Box, Page
from pipelines.reading_order import sort_reading_order
from pipelines.sniff import OpenedDocument, detect_kind, open_source, source_name
from pipelines.textlayer import extract_words

__all__ = [
    "DocumentError",
    "IngestOptions",
    "Page",
    "count_pages",
    "detect_kind",
    "iter_pages",
    "ocr_page",
    "plan_pages",
]

SourceLike = str | Path | BinaryIO


def iter_pages(
    source: SourceLike, *, name: str | None = None, options: IngestOptions | None = None
) -> Iterator[Page]:
    """Pages of a PDF, TIFF, PNG or JPEG (path or binary stream), one at a time."""
    return _iter(source, name, options or IngestOptions(), run_ocr=True)


def plan_pages(
    source: SourceLike, *, name: str | None = None, options: IngestOptions | None = None
) -> Iterator[Page]:
    """Like `iter_pages` but never runs OCR: `text_source` is the decision that would be taken
    (pages decided `ocr` come without words). Cheap: for measuring how many pages need OCR."""
    return _iter(source, name, options or IngestOptions(), run_ocr=False)


def ocr_page(
    source: SourceLike, number: int, *, name: str | None = None,
    options: IngestOptions | None = None,
) -> OcrResult:
    """OCR page `number` of a document ingested earlier (deferred OCR): the page is rendered
    again at the OCR dpi (a stored artifact's raster is far too small for tesseract) and read
    as ingest would have read it. OCR failure or time-out, or a page that cannot be rendered
    again, raise DocumentError ("<name>: page N: <reason>")."""
    opts = options or IngestOptions()
    nm = source_name(source, name)
    src = open_source(source, nm, opts.max_file_bytes)
    job = _Reading(src, opts, run_ocr=True)
    try:
        grey, dpi = _pdf_ocr_raster(src, number, opts) if src.kind == "pdf" else (
            _image_ocr_raster(src, number, opts))
    except DocumentError:
        raise
    except Exception as exc:  # library boundary, as in iter_pages
        raise _unexpected(src, number, exc) from None
    result = _ocr(job, number, grey, dpi)
    if len(result.words) > opts.max_page_words:  # the same word budget as at ingest
        result = OcrResult(result.words[: opts.max_page_words],
                           result.boxes[: opts.max_page_words], result.mean_conf)
    return result


def _pdf_ocr_raster(src: OpenedDocument, number: int,
                    opts: IngestOptions) -> tuple[Image.Image, int | None]:
    with pdf.PDFIUM_LOCK:
        doc = _open_pdf(src)
        try:
            if not 1 <= number <= len(doc):
                raise DocumentError(src.name, f"page {number}: not in the document", number)
            page = doc[number - 1]
            try:
                dpi = _fit_dpi(pdf.page_size_pt(page), opts.ocr_dpi, opts.max_page_pixels)
                return pdf.render(page, dpi, grey=True), dpi
            finally:
                page.close()
        finally:
            doc.close()


def _image_ocr_raster(src: OpenedDocument, number: int,
                      opts: IngestOptions) -> tuple[Image.Image, int | None]:
    im = images.open_image(src, opts.max_image_pixels)
    try:
        for n, frame, src_dpi in images.iter_frames(src, im, None, opts.max_pages,
                                                    opts.max_image_pixels):
            if n == number:
                return images.ocr_raster(frame, opts.ocr_dpi, src_dpi, opts.max_page_pixels)
            del frame
    finally:
        _close_image(src, im)
    raise DocumentError(src.name, f"page {number}: not in the document", number)


def count_pages(
    source: SourceLike, name: str | None = None, options: IngestOptions | None = None
) -> int:
    """Number of pages, without rasterising anything."""
    opts = options or IngestOptions()
    nm = source_name(source, name)
    src = open_source(source, nm, opts.max_file_bytes)
    if src.kind == "pdf":
        with pdf.PDFIUM_LOCK:
            doc = _open_pdf(src)
            try:
                return len(doc)
            finally:
                doc.close()
    im = images.open_image(src, opts.max_image_pixels)
    try:
        n = images.count_frames(src, im)
        if n is None:
            raise DocumentError(nm, "corrupt or unreadable image (damaged page chain)")
        return n
    finally:
        _close_image(src, im)


@dataclass(frozen=True)
class _Reading:
    """One document being read: its source, the options, and whether OCR runs (plan_pages: no)."""

    src: OpenedDocument
    opts: IngestOptions
    run_ocr: bool


@dataclass(frozen=True)
class _Text:
    """The words a page ends with, and tesseract's mean confidence when they are OCR's."""

    words: list[str]
    boxes: list[Box]
    ocr_conf: float | None = None

    @classmethod
    def of_ocr(cls, ocr: OcrResult) -> _Text:
        return cls(ocr.words, ocr.boxes, ocr.mean_conf)


def _iter(
    source: SourceLike, name: str | None, opts: IngestOptions, run_ocr: bool
) -> Iterator[Page]:
    nm = source_name(source, name)
    job = _Reading(open_source(source, nm, opts.max_file_bytes), opts, run_ocr)
    if job.src.kind == "pdf":
        yield from _pdf_pages(job)
    else:
        yield from _image_pages(job)


def _check_count(src: OpenedDocument, n: int, opts: IngestOptions) -> None:
    if n == 0:
        raise DocumentError(src.name, "document has no pages")
    if n > opts.max_pages:
        raise DocumentError(src.name, f"too many pages ({n}; the limit is {opts.max_pages})")


def _open_pdf(src: OpenedDocument):
    try:
        return pdf.open_pdf(src)
    except DocumentError:
        if pdf.is_truncated(src):
            raise DocumentError(src.name, "truncated PDF (the file ends early)") from None
        raise


def _pdf_pages(job: _Reading) -> Iterator[Page]:
    src, opts = job.src, job.opts
    with pdf.PDFIUM_LOCK:
        doc = _open_pdf(src)
    try:
        with pdf.PDFIUM_LOCK:
            n = len(doc)
        _check_count(src, n, opts)
        _check_declared_images(src, opts)
        parse_check.check_pages(src, opts.max_page_objects, opts.max_parse_mb, opts.max_ingest_s)
        truncated = pdf.is_truncated(src)
        deadline = _Deadline(src, opts.max_ingest_s)
        for number in range(1, n + 1):
            deadline.check(number - 1)
            t0 = time.perf_counter()
            try:
                page = _pdf_page(job, doc, number)
            except DocumentError:
                raise
            except Exception as exc:  # library boundary: a bad page is a bad document
                raise _unexpected(src, number, exc) from None
            page.ms = (time.perf_counter() - t0) * 1000
            yield page
        if truncated:
            # pdfium rebuilds what it can from a cut file; say so after the pages it recovered.
            raise DocumentError(
                src.name, f"truncated PDF (the file ends early; {n} page(s) recovered)"
            )
    finally:
        with pdf.PDFIUM_LOCK:
            doc.close()


def _pdf_page(job: _Reading, doc, number: int) -> Page:
    # pdfium work under the process-wide lock; tesseract (a subprocess) outside it, so threads
    # ingesting different documents overlap their OCR.
    src, opts = job.src, job.opts
    with pdf.PDFIUM_LOCK:
        try:
            page = doc[number - 1]
        except Exception as exc:
            raise DocumentError(
                src.name, f"page {number}: cannot be loaded ({exc})", number
            ) from None
        try:
            scan = _check_scan(src, number, pdf.scan_page(page, opts.max_page_objects), opts)
            size = pdf.page_size_pt(page)
            _check_pixels(src, number, pdf.raster_size(size, opts.dpi), opts)
            image = pdf.render(page, opts.dpi)
            words: list[str] = []
            boxes: list[Box] = []
            truncated_words = False
            area: float | None = None  # only measured when the decision depends on it
            if opts.ocr_mode != "ocr":
                words, boxes = extract_words(page, opts.max_page_words + 1)
                truncated_words = len(words) > opts.max_page_words
                words, boxes = words[: opts.max_page_words], boxes[: opts.max_page_words]
                if opts.ocr_mode == "auto" and words:
                    area = pdf.image_area(page, scan.images)
            decision = decide(
                opts.ocr_mode,
                boxes,
                image,
                area or 0.0,
                opts.min_text_coverage,
                opts.scan_image_area,
            )
            grey: Image.Image | None = None
            dpi = _fit_dpi(size, opts.ocr_dpi, opts.max_page_pixels)
            if decision.text_source == "ocr" and job.run_ocr:
                grey = image.convert("L") if dpi == opts.dpi else pdf.render(page, dpi, grey=True)
        finally:
            page.close()
    if decision.text_source != "ocr":
        text = _Text(*sort_reading_order(words, boxes))
    elif grey is not None:
        text = _Text.of_ocr(_ocr(job, number, grey, dpi))
    else:
        text = _Text([], [])
    page_out = replace(_page(job, number, image, decision, text), size_pt=size, image_area=area)
    if truncated_words and decision.text_source == "text_layer":
        page_out.reason += f"; text layer cut to its first {opts.max_page_words} words"
    return _cut_ocr_words(page_out, opts)


def _image_pages(job: _Reading) -> Iterator[Page]:
    src, opts = job.src, job.opts
    im = images.open_image(src, opts.max_image_pixels)
    try:
        n = images.count_frames(src, im)
        if n is None:  # damaged page chain: reopen (counting moved the decoder) and go lazily
            _close_image(src, im)
            im = images.open_image(src, opts.max_image_pixels)
        else:
            _check_count(src, n, opts)
        frames = images.iter_frames(src, im, n, opts.max_pages, opts.max_image_pixels)
        deadline = _Deadline(src, opts.max_ingest_s)
        done = 0
        while True:
            if n is None or done < n:
                deadline.check(done)
            t0 = time.perf_counter()
            try:
                number, frame, src_dpi = next(frames)
            except StopIteration:
                return
            try:
                page = _image_page(job, number, frame, src_dpi)
            except DocumentError:
                raise
            except Exception as exc:  # library boundary
                raise _unexpected(src, number, exc) from None
            del frame
            page.ms = (time.perf_counter() - t0) * 1000
            yield page
            done = number
    finally:
        _close_image(src, im)


def _close_image(src: OpenedDocument, im: Image.Image) -> None:
    if isinstance(src.data, Path):  # a caller's stream stays the caller's to close
        im.close()


def _image_page(
    job: _Reading, number: int, frame: Image.Image, src_dpi: tuple[float, float] | None
) -> Page:
    opts = job.opts
    image = images.vision_raster(frame, opts.dpi, src_dpi)
    decision = decide(opts.ocr_mode, [], image, 1.0, opts.min_text_coverage, opts.scan_image_area)
    if decision.text_source == "text_layer":
        # An image has no text layer to take words from: "none", not "text_layer, 0 words".
        why = "image: no text layer" if opts.ocr_mode == "text" else decision.reason
        decision = replace(decision, text_source="none", reason=why)
    text = _Text([], [])
    if decision.text_source == "ocr" and job.run_ocr:
        grey, told = images.ocr_raster(frame, opts.ocr_dpi, src_dpi, opts.max_page_pixels)
        text = _Text.of_ocr(_ocr(job, number, grey, told))
    size = None
    if src_dpi is not None:
        size = (frame.width * 72 / src_dpi[0], frame.height * 72 / src_dpi[1])
    page = replace(_page(job, number, image, decision, text), size_pt=size, image_area=1.0)
    return _cut_ocr_words(page, opts)


def _page(job: _Reading, number: int, image: Image.Image, decision: Decision, text: _Text) -> Page:
    # The required fields in their order: each value's name says which it is.
    return Page(
        number, image.width, image.height, image, text.words, text.boxes, decision.text_source,
        coverage=decision.coverage, ocr_conf=text.ocr_conf, reason=decision.reason,
        doc_key=job.src.name,
    )


def _ocr(job: _Reading, number: int, grey: Image.Image, dpi: int | None) -> OcrResult:
    opts = job.opts
    try:
        return ocr_image(grey, OcrSettings(opts.ocr_lang, opts.ocr_timeout_s,
                                           opts.min_ocr_conf, opts.ocr_psm), dpi=dpi)
    except (OcrTimeout, OcrFailed) as exc:
        raise DocumentError(job.src.name, f"page {number}: {exc}", number) from None


class _Deadline:
    """The document's ingest-time budget, checked between pages (a page under way finishes:
    OCR has its own per-page timeout and the other per-page budgets bound the rest)."""

    def __init__(self, src: OpenedDocument, seconds: float) -> None:
        self.src, self.seconds = src, seconds
        self.start = time.monotonic()

    def check(self, pages_done: int) -> None:
        if pages_done and time.monotonic() - self.start > self.seconds:
            raise DocumentError(
                self.src.name,
                f"ingest over {self.seconds:g} s after page {pages_done} (the budget per "
                "document; the pages before it are kept)",
                pages_done + 1,
            )


def _check_declared_images(src: OpenedDocument, opts: IngestOptions) -> None:
    """Every image the file declares, masks included (pdfium decodes an /SMask or /Mask at its
    own size but reports only the base image's), against the image budget, before any page."""
    for obj, w, h in pdf.declared_image_sizes(src):
        if w * h > opts.max_image_pixels:
            raise DocumentError(
                src.name,
                f"embedded image {w}x{h} px (object {obj}) over the "
                f"{opts.max_image_pixels:,}-pixel budget",
            )


def _check_scan(src: OpenedDocument, number: int, scan: pdf.PageScan,
                opts: IngestOptions) -> pdf.PageScan:
    """Object and embedded-image budgets, before any text page, raster or image is built."""
    if not scan.complete:
        at_least = "at least " if scan.nested else ""  # the nested walk stopped early
        raise DocumentError(
            src.name,
            f"page {number}: {at_least}{scan.objects:,} page objects over the "
            f"{opts.max_page_objects:,}-object budget",
            number,
        )
    for im in scan.images:
        if im.width * im.height > opts.max_image_pixels:
            raise DocumentError(
                src.name,
                f"page {number}: embedded image {im.width}x{im.height} px over the "
                f"{opts.max_image_pixels:,}-pixel budget",
                number,
            )
    return scan


def _cut_ocr_words(page: Page, opts: IngestOptions) -> Page:
    """OCR words under the same per-page word budget as the text layer (reading order kept)."""
    if page.text_source == "ocr" and len(page.words) > opts.max_page_words:
        page.words = page.words[: opts.max_page_words]
        page.boxes = page.boxes[: opts.max_page_words]
        page.reason += f"; OCR words cut to the first {opts.max_page_words}"
    return page


def _check_pixels(src: OpenedDocument, number: int, size: tuple[int, int],
                  opts: IngestOptions) -> None:
    w, h = size
    if w * h > opts.max_page_pixels:
        raise DocumentError(
            src.name,
            f"page {number} has too many pixels at {opts.dpi} dpi ({w}x{h} = {w * h}; "
            f"the limit is {opts.max_page_pixels})",
            number,
        )


def _fit_dpi(size_pt: tuple[float, float], dpi: int, max_pixels: int) -> int:
    """The OCR dpi, lowered for huge pages so the OCR raster stays within the pixel limit."""
    w_in, h_in = size_pt[0] / 72, size_pt[1] / 72
    if w_in * h_in * dpi * dpi <= max_pixels:
        return dpi
    return max(1, math.floor(math.sqrt(max_pixels / (w_in * h_in))))


def _unexpected(src: OpenedDocument, number: int, exc: Exception) -> DocumentError:
    detail = str(exc).strip() or type(exc).__name__
    return DocumentError(src.name, f"page {number}: cannot be read ({detail})", number)
