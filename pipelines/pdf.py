"""PDF documents through pdfium (pypdfium2): open with clear errors, then one page at a time.

pdfium over poppler: rendering a realdocs page at 100 dpi took a median 12 ms with pypdfium2 and
57 ms with pdf2image (a pdftoppm process per page), and pdfium also gives the text layer in-process.
"""

from __future__ import annotations

import ctypes
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import pypdfium2 as pdfium
import pypdfium2.internal as pdfium_utils
import pypdfium2.raw as raw
from PIL import Image

from pipelines.errors import DocumentError
from pipelines.sniff import OpenedDocument

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


def open_pdf(source: OpenedDocument) -> pdfium.PdfDocument:
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


def is_truncated(source: OpenedDocument) -> bool:
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


@dataclass(frozen=True)
class PageImage:
    bounds: tuple[float, ...] | None  # left, bottom, right, top in page space (None: unknown)
    width: int  # pixels the file declares: what decoding the image would make
    height: int


@dataclass(frozen=True)
class PageScan:
    objects: int  # page objects counted (nested forms included); over the limit: a lower bound
    images: list[PageImage]
    complete: bool  # False: the walk stopped at the object limit (images then incomplete)
    nested: bool = False  # the limit was passed inside forms (objects: counted so far)


def scan_page(page: pdfium.PdfPage, max_objects: int, max_depth: int = 8) -> PageScan:
    """Count the page's objects and list its images without decoding or drawing anything. The
    top-level count is instant (pdfium parsed the content when the page loaded); nested forms
    are walked, and the walk stops once `max_objects` is passed, so a hostile page costs what
    an allowed one does. Raw pdfium calls, not `get_objects`: its per-object wrappers cost
    1.5 s on a page of 300,000 text objects."""
    top = raw.FPDFPage_CountObjects(page.raw)
    if top > max_objects:
        return PageScan(top, [], False)
    images: list[PageImage] = []
    bounds = [ctypes.c_float() for _ in range(4)]
    w, h = ctypes.c_uint(), ctypes.c_uint()
    total = top
    stack: list[tuple[object, int]] = [(None, 0)]
    while stack:
        form, depth = stack.pop()
        if form is None:
            count = top
            get = partial(raw.FPDFPage_GetObject, page.raw)
        else:
            count = raw.FPDFFormObj_CountObjects(form)
            total += count
            if total > max_objects:
                return PageScan(total, images, False, nested=True)
            get = partial(raw.FPDFFormObj_GetObject, form)
        for i in range(count):
            obj = get(i)
            kind = raw.FPDFPageObj_GetType(obj)
            if kind == raw.FPDF_PAGEOBJ_IMAGE:
                if not raw.FPDFImageObj_GetImagePixelSize(obj, w, h):
                    w.value = h.value = 0
                ok = raw.FPDFPageObj_GetBounds(obj, *bounds)
                box = tuple(b.value for b in bounds) if ok else None
                images.append(PageImage(box, w.value, h.value))
            elif kind == raw.FPDF_PAGEOBJ_FORM and depth < max_depth:
                stack.append((obj, depth + 1))
    return PageScan(total, images, True)


def image_area(page: pdfium.PdfPage, images: list[PageImage] | None = None) -> float:
    """Share of the page (crop box) covered by image objects, nested forms included (`images`:
    from `scan_page`, scanned here when not given)."""
    left, bottom, right, top = page.get_cropbox()
    w, h = right - left, top - bottom
    if w <= 0 or h <= 0:
        return 0.0
    if images is None:
        images = scan_page(page, max_objects=2**62).images
    covered = [[False] * _IMAGE_GRID for _ in range(_IMAGE_GRID)]
    n = _IMAGE_GRID
    for x0, y0, x1, y1 in (im.bounds for im in images if im.bounds is not None):
        c0 = max(0, math.floor((x0 - left) / w * n))
        c1 = min(n, math.ceil((x1 - left) / w * n))
        r0 = max(0, math.floor((y0 - bottom) / h * n))
        r1 = min(n, math.ceil((y1 - bottom) / h * n))
        for r in range(r0, r1):
            row = covered[r]
            for c in range(c0, c1):
                row[c] = True
    return sum(map(sum, covered)) / (n * n)



# A stream object's dictionary ends right before its `stream` keyword; its header is the last
# `N G obj` before that. Every image XObject is a stream (a stream never lives in an object
# stream), so its dictionary is plain text in the file even when everything else is compressed.
_STREAM_START = re.compile(rb">>\s*stream\r?\n")
_OBJ_HEADER = re.compile(rb"(\d+)\s+\d+\s+obj\b")
_SIZE_KEY = re.compile(rb"/(Width|Height)\s*(\d+)(\s+\d+\s+R\b)?")
_INT_OBJ = re.compile(rb"(\d+)\s+\d+\s+obj\s*(\d+)\s*endobj")
_NAME_ESCAPE = re.compile(rb"#([0-9A-Fa-f]{2})")
_SCAN_CHUNK = 8 << 20
_SCAN_OVERLAP = 64 << 10  # a stream dictionary longer than this across a chunk edge is missed


def declared_image_sizes(source: OpenedDocument) -> Iterator[tuple[int, int, int]]:
    """(object number, width, height) of every stream in the file whose dictionary declares a
    /Width and a /Height: images on pages, and the ones pdfium decodes without reporting them
    (an image's /SMask or /Mask, images in patterns, annotations or fonts). From the raw bytes,
    in chunks, nothing decoded. A size given by reference to an integer object in an object
    stream cannot be read here and is skipped (pdfium's per-page scan still sees base images)."""
    ints: dict[int, int] | None = None  # "N 0 obj 123 endobj", indexed on first need
    for buf in _chunks(source):
        for obj, dict_bytes in _stream_dicts(buf):
            sizes: dict[bytes, int] = {}
            for m in _SIZE_KEY.finditer(_NAME_ESCAPE.sub(_unescape, dict_bytes)):
                value = int(m.group(2))
                if m.group(3):  # "/Width 12 0 R": the integer object 12
                    if ints is None:
                        ints = _integer_objects(source)
                    if value not in ints:
                        continue
                    value = ints[value]
                sizes[m.group(1)] = value
            if b"Width" in sizes and b"Height" in sizes:
                yield obj, sizes[b"Width"], sizes[b"Height"]


def _unescape(m: re.Match[bytes]) -> bytes:
    return bytes([int(m.group(1), 16)])


def _chunks(source: OpenedDocument) -> Iterator[bytes]:
    """The file in overlapping chunks (each starts with the last 64 KB of the one before)."""
    fh: BinaryIO = open(source.data, "rb") if isinstance(source.data, Path) else source.data  # noqa: SIM115
    pos = fh.tell() if fh is source.data else 0
    try:
        fh.seek(0)
        carry = b""
        while chunk := fh.read(_SCAN_CHUNK):
            buf = carry + chunk
            yield buf
            carry = buf[-_SCAN_OVERLAP:]
    finally:
        if fh is source.data:
            fh.seek(pos)
        else:
            fh.close()


def _stream_dicts(buf: bytes) -> Iterator[tuple[int, bytes]]:
    last = 0
    for m in _STREAM_START.finditer(buf):
        head = buf[last : m.start()]
        header = None
        for found in _OBJ_HEADER.finditer(head):  # the last one before this stream
            header = found
        if header is not None:
            yield int(header.group(1)), head[header.end() :]
        last = m.end()


def _integer_objects(source: OpenedDocument) -> dict[int, int]:
    out: dict[int, int] = {}
    for buf in _chunks(source):
        for m in _INT_OBJ.finditer(buf):
            out[int(m.group(1))] = int(m.group(2))
    return out
