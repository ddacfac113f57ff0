"""PDF documents through pdfium (pypdfium2): open with clear errors, then one page at a time.

pdfium over poppler: rendering a realdocs page at 100 dpi took a median 12 ms with pypdfium2 and
57 ms with pdf2image (a pdftoppm process per page), and pdfium also gives the text layer in-process.
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import pypdfium2 as pdfium
import pypdfium2.internal as pdfium_utils
import pypdfium2.raw as raw
from PIL import Image

from pipelines.errors import DocumentError
from pipelines.sniff import Source

_LOAD_ERRORS = {
    raw.FPDF_ERR_FILE: "cannot open the file",
    raw.FPDF_ERR_FORMAT: "not a valid PDF or damaged beyond repair (corrupt structure)",
    raw.FPDF_ERR_PASSWORD: "encrypted PDF (password required)",
    raw.FPDF_ERR_SECURITY: "encrypted PDF (unsupported security handler)",
    raw.FPDF_ERR_PAGE: "damaged page tree",
}
# pdfium is not thread-safe: every call into it, from any thread of the process, holds this
# lock (re-entrant: stream-backed documents call back into Python while pdfium runs).
PDFIUM_LOCK = threading.RLock()
_IMAGE_GRID = 64  # resolution of the grid on which image coverage is measured


def open_pdf(source: Source) -> pdfium.PdfDocument:
    """Load the document; the caller holds PDFIUM_LOCK. A PDF that loads with zero pages comes
    back as a document of length 0 (the caller reports "no pages")."""
    try:
        handle, keepalive = _load(source.data)
    except Exception as exc:  # library boundary
        raise DocumentError(source.name, f"unreadable PDF ({exc})") from None
    if not handle:
        # pdfium's last error is only set by a load that fails (a successful load leaves the
        # previous one in place), so it is read here, right after the load returned NULL, and
        # nowhere else: pypdfium2's PdfDocument also reads it when a document that did load has
        # no pages, which reported a page-less PDF opened after an encrypted one as encrypted.
        code = raw.FPDF_GetLastError()
        reason = _LOAD_ERRORS.get(code, f"unreadable PDF (pdfium error {code})")
        raise DocumentError(source.name, reason)
    doc = pdfium.PdfDocument(handle)
    doc._data_holder.extend(keepalive)  # what pdfium reads through lives as long as the doc
    return doc


def _load(data: Path | BinaryIO) -> tuple[Any, tuple[object, ...]]:
    """The raw FPDF_DOCUMENT (NULL when the load failed) and the objects it reads through."""
    if isinstance(data, Path | str):
        path = (str(data) + "\0").encode("utf-8", errors="surrogateescape")
        return raw.FPDF_LoadDocument(path, None), ()
    reader, keepalive = pdfium_utils.get_bufreader(data)
    return raw.FPDF_LoadCustomDocument(reader, None), (data, *keepalive)


def is_truncated(source: Source) -> bool:
    """A complete PDF ends with %%EOF (some writers add a little junk after it)."""
    return b"%%EOF" not in source.tail(2048)


def page_size_pt(page: pdfium.PdfPage) -> tuple[float, float]:
    """Width and height in points as displayed (page rotation applied)."""
    w, h = page.get_size()
    return float(w), float(h)


def raster_size(size_pt: tuple[float, float], dpi: float) -> tuple[int, int]:
    return max(1, math.ceil(size_pt[0] * dpi / 72)), max(1, math.ceil(size_pt[1] * dpi / 72))


def render(page: pdfium.PdfPage, dpi: float, grey: bool = False) -> Image.Image:
    bitmap = page.render(scale=dpi / 72, grayscale=grey, rev_byteorder=not grey)
    try:
        im = bitmap.to_pil()
        return im.convert("L" if grey else "RGB") if im.mode != ("L" if grey else "RGB") else im
    finally:
        bitmap.close()


def image_area(page: pdfium.PdfPage) -> float:
    """Share of the page (crop box) covered by image objects, nested forms included."""
    left, bottom, right, top = page.get_cropbox()
    w, h = right - left, top - bottom
    if w <= 0 or h <= 0:
        return 0.0
    covered = [[False] * _IMAGE_GRID for _ in range(_IMAGE_GRID)]
    n = _IMAGE_GRID
    for x0, y0, x1, y1 in _image_bounds(page):
        c0 = max(0, math.floor((x0 - left) / w * n))
        c1 = min(n, math.ceil((x1 - left) / w * n))
        r0 = max(0, math.floor((y0 - bottom) / h * n))
        r1 = min(n, math.ceil((y1 - bottom) / h * n))
        for r in range(r0, r1):
            row = covered[r]
            for c in range(c0, c1):
                row[c] = True
    return sum(map(sum, covered)) / (n * n)


def _image_bounds(page: pdfium.PdfPage, max_depth: int = 8) -> Iterator[tuple[float, ...]]:
    """Bounds of the image objects on a page, nested forms included. Raw pdfium calls, not
    `get_objects`: its per-object wrappers cost 1.5 s on a page of 300,000 text objects."""
    bounds = [ctypes.c_float() for _ in range(4)]
    stack: list[tuple[object, int]] = [(None, 0)]
    while stack:
        form, depth = stack.pop()
        if form is None:
            count = raw.FPDFPage_CountObjects(page.raw)
            get = partial(raw.FPDFPage_GetObject, page.raw)
        else:
            count = raw.FPDFFormObj_CountObjects(form)
            get = partial(raw.FPDFFormObj_GetObject, form)
        for i in range(count):
            obj = get(i)
            kind = raw.FPDFPageObj_GetType(obj)
            if kind == raw.FPDF_PAGEOBJ_IMAGE:
                if raw.FPDFPageObj_GetBounds(obj, *bounds):
                    left, bottom, right, top = (b.value for b in bounds)
                    yield left, bottom, right, top
            elif kind == raw.FPDF_PAGEOBJ_FORM and depth < max_depth:
                stack.append((obj, depth + 1))
