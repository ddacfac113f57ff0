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


def write_text_bomb_pdf(path: Path, pages: int = 3, words: int = 300_000) -> Path:
    """A small PDF whose every page draws one shared content stream of `words` tiny words (the
    hostile shape that once took 430 s and 3.4 GB for 20 pages), written by hand: no PDF
    library shares one stream between pages."""
    import zlib

    ops = ["BT /F1 2 Tf"]
    for i in range(words):
        x, y = 10 + (i % 100) * 5.8, 780 - ((i // 100) % 380) * 2
        ops.append(f"1 0 0 1 {x:.1f} {y} Tm (w{i % 10}) Tj")
    ops.append("ET")
    data = zlib.compress("\n".join(ops).encode(), 6)
    kids = " ".join(f"{5 + k} 0 R" for k in range(pages))
    page = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents 4 0 R >>")
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Length {len(data)} /Filter /FlateDecode >>\nstream\n".encode()
        + data + b"\nendstream",
        *([page] * pages),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path
