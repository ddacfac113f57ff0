"""Documents generated for the page-ingestion tests (imported as `pagedocs`: a unique module name,
since tests/ folders are not packages and `conftest` is ambiguous across them)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from reportlab.lib.pagesizes import letter
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

LINES = [
    "Quarterly statement of account",
    "Invoice number 4711 issued on March 3",
    "Total amount due within thirty days",
]


def write_text_pdf(
    path: Path, pages: int = 3, lines: list[str] | None = None, encrypt: str | None = None
) -> Path:
    """A born-digital PDF: each page says which page it is, then a few lines of text."""
    c = canvas.Canvas(str(path), pagesize=letter, encrypt=encrypt)
    for n in range(1, pages + 1):
        c.setFont("Helvetica", 14)
        c.drawString(72, 720, f"Page {n} heading")
        y = 690
        for line in lines or LINES:
            c.drawString(72, y, line)
            y -= 22
        c.showPage()
    c.save()
    return path


def text_image(lines: list[str], size: tuple[int, int] = (1700, 2200)) -> Image.Image:
    """A clean 200-dpi 'scan' with large print tesseract reads reliably."""
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=48)
    y = 200
    for line in lines:
        draw.text((150, y), line, fill="black", font=font)
        y += 90
    return im


def write_scan_pdf(path: Path, pages: int = 1, lines: list[str] | None = None) -> Path:
    """An image-only PDF (a scan): no text layer at all."""
    c = canvas.Canvas(str(path), pagesize=letter)
    for _ in range(pages):
        buf = io.BytesIO()
        text_image(lines or LINES).save(buf, format="PNG")
        buf.seek(0)
        c.drawImage(ImageReader(buf), 0, 0, width=letter[0], height=letter[1])
        c.showPage()
    c.save()
    return path
