"""A handful of short generated documents for the workflow tests (steps, `doctriage run`, the
workers, their metrics), so those tests run where the shared realdocs are absent.

Made with pipelines.synth: born-digital PDFs with a text layer (fast: no OCR) and one PNG page
image (OCR), 8 pages in all. Each document is the first seeded draw of its class with the wanted
page count, so the same synth code gives the same bytes on every run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

# Names the tests refer to.
ONE_PAGE_PDF = "letter-1p.pdf"
TWO_PAGE_PDF = "invoice-2p.pdf"
SCAN_PNG = "form-scan.png"

_SEED_TAG = "tests-short-docs"
_MAX_DRAWS = 500  # a class gives each short length within a few draws; this only bounds a bug
_SCAN_DPI = 150


@dataclass(frozen=True)
class ShortDoc:
    name: str
    label: str
    pages: int


# Born-digital PDFs: 1 + 2 + 1 + 2 + 1 pages; the scan adds one page (8 in all).
PDFS = (
    ShortDoc(ONE_PAGE_PDF, "letter", 1),
    ShortDoc(TWO_PAGE_PDF, "invoice", 2),
    ShortDoc("memo-1p.pdf", "memo", 1),
    ShortDoc("resume-2p.pdf", "resume", 2),
    ShortDoc("email-1p.pdf", "email", 1),
)
SCAN = ShortDoc(SCAN_PNG, "form", 1)
PAGES = sum(d.pages for d in PDFS) + SCAN.pages


def synth_pdf(label: str, pages: int) -> bytes:
    """The first born-digital `label` document of the seeded draws that has `pages` pages."""
    from pipelines.synth import make_document
    from pipelines.synth.corpus import derive_seed

    for i in range(_MAX_DRAWS):
        pdf, n = make_document(label, derive_seed(_SEED_TAG, label, i), scanned=False)
        if n == pages:
            return pdf
    raise LookupError(f"no {pages}-page {label!r} document in {_MAX_DRAWS} draws")


def scanned_pdf(label: str, pages: int, tag: str = _SEED_TAG) -> bytes:
    """The first seeded scanned `label` document (image-only pages: they need OCR) that has
    `pages` pages."""
    from pipelines.synth import make_document
    from pipelines.synth.corpus import derive_seed

    for i in range(_MAX_DRAWS):
        pdf, n = make_document(label, derive_seed(tag, label, i), scanned=True)
        if n == pages:
            return pdf
    raise LookupError(f"no {pages}-page scanned {label!r} document in {_MAX_DRAWS} draws")


def page_png(pdf: bytes, dpi: int = _SCAN_DPI) -> bytes:
    """Page 1 of `pdf` as a greyscale PNG: an image file with no text layer (it needs OCR)."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(pdf)
    try:
        image = doc[0].render(scale=dpi / 72, grayscale=True).to_pil()
    finally:
        doc.close()
    buf = io.BytesIO()
    image.save(buf, format="PNG", dpi=(dpi, dpi))
    return buf.getvalue()


def write_short_docs(folder: Path) -> Path:
    """Write the short documents into `folder` (made if needed); return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for doc in PDFS:
        (folder / doc.name).write_bytes(synth_pdf(doc.label, doc.pages))
    (folder / SCAN.name).write_bytes(page_png(synth_pdf(SCAN.label, SCAN.pages)))
    return folder
