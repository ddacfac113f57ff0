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


def write_text_bomb_pdf(
    path: Path, pages: int = 3, words: int = 300_000, in_form: bool = False
) -> Path:
    """A small PDF whose every page draws one shared content stream of `words` tiny words (the
    hostile shape that once took 430 s and 3.4 GB for 20 pages), written by hand: no PDF
    library shares one stream between pages. `in_form`: the words sit in a form XObject that
    each page draws (one top-level object per page)."""
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
    if in_form:  # object 4 becomes the form; the pages draw it from a stream of their own
        objs[3] = (b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] "
                   b"/Resources << /Font << /F1 3 0 R >> >> " + objs[3][3:])
        objs.append(b"<< /Length 8 >>\nstream\n/Fm1 Do\n\nendstream")
        form_page = page.replace(b"/Contents 4 0 R", f"/Contents {len(objs)} 0 R".encode())
        form_page = form_page.replace(
            b">> >> /Contents", b">> /XObject << /Fm1 4 0 R >> >> /Contents"
        )
        objs[4 : 4 + pages] = [form_page] * pages
    path.write_bytes(_hand_pdf(objs))
    return path


def zeros_zlib(n: int, chunk: int = 1 << 20) -> bytes:
    """A valid zlib stream of `n` zero bytes, built without compressing them: after a full flush
    deflate forgets its history, so every 1 MiB chunk compresses to the same ~1 KB block, which
    is repeated (1.6 GB of zeros -> 1.6 MB in a few ms)."""
    import zlib

    def body(size: int) -> bytes:
        c = zlib.compressobj(9)
        return (c.compress(bytes(size)) + c.flush(zlib.Z_FULL_FLUSH))[2:]  # drop the header

    k, r = divmod(n, chunk)
    parts = [b"\x78\xda", body(chunk) * k if k else b"", body(r) if r else b""]
    adler = ((n % 65521) << 16) | 1  # Adler-32 of n zeros: A = 1, B = n
    return b"".join(parts) + b"\x03\x00" + adler.to_bytes(4, "big")  # empty final block


def _hand_pdf(objs: list[bytes]) -> bytes:
    """A PDF of these objects (1 is the catalog) with a correct xref table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def write_big_image_pdf(
    path: Path, width: int = 40_000, height: int = 40_000, lead_pages: int = 0,
    as_smask: bool = False,
) -> Path:
    """`lead_pages` pages of text, then a page drawing one embedded 8-bit grey image of
    width x height pixels (all zero: black) that fills it. The image stream is zlib'd twice
    (/Filter [/FlateDecode /FlateDecode]), so 40000x40000 (1.6 GB decoded) is ~5 KB on disk.
    `as_smask`: the page draws a 1x1 image whose /SMask is that big image (pdfium reports the
    1x1 size and decodes the mask at its own when it renders)."""
    import zlib

    data = zlib.compress(zeros_zlib(width * height), 9)
    draw = zlib.compress(b"q 612 0 0 792 0 0 cm /Im1 Do Q")
    text = zlib.compress(b"BT /F1 14 Tf 72 720 Td (A page of text before the image) Tj ET")
    n = lead_pages + 1
    kids = " ".join(f"{7 + k} 0 R" for k in range(n))
    res = b"/Resources << /Font << /F1 3 0 R >> /XObject << /Im1 4 0 R >> >>"
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Type /XObject /Subtype /Image /Width {width} /Height {height} "
        f"/ColorSpace /DeviceGray /BitsPerComponent 8 /Filter [/FlateDecode /FlateDecode] "
        f"/Length {len(data)} >>\nstream\n".encode() + data + b"\nendstream",
        f"<< /Length {len(draw)} /Filter /FlateDecode >>\nstream\n".encode() + draw
        + b"\nendstream",
        f"<< /Length {len(text)} /Filter /FlateDecode >>\nstream\n".encode() + text
        + b"\nendstream",
    ]
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] " + res + b" /Contents %d 0 R >>"
    objs += [page % 6 for _ in range(lead_pages)] + [page % 5]
    if as_smask:  # object 4 becomes a 1x1 image masked by the big one (the last object)
        objs.append(objs[3])
        one = zlib.compress(b"\x80")
        objs[3] = (f"<< /Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray "
                   f"/BitsPerComponent 8 /SMask {len(objs)} 0 R /Filter /FlateDecode "
                   f"/Length {len(one)} >>\nstream\n").encode() + one + b"\nendstream"
    path.write_bytes(_hand_pdf(objs))
    return path


def write_g4_tiff(path: Path, frames: int = 6, size: tuple[int, int] = (7000, 8000)) -> Path:
    """A multi-page bilevel TIFF in CCITT group 4: mostly-white frames of `size` pixels (7000x8000
    = 56 Mpx each) that are a few KB on disk each."""
    first = Image.new("1", size, 1)
    ImageDraw.Draw(first).rectangle((100, 100, 400, 200), fill=0)
    first.save(path, format="TIFF", compression="group4", save_all=True,
               append_images=[first.copy() for _ in range(frames - 1)])
    return path


def write_inline_image_pdf(path: Path, width: int, height: int) -> Path:
    """One page whose content stream carries an inline image (BI ... ID ... EI) of width x height
    grey pixels: its size is only in the (compressed) content stream, never in a dictionary."""
    import zlib

    data = zlib.compress(bytes(width * height), 9)
    content = (f"q 612 0 0 792 0 0 cm BI /W {width} /H {height} /CS /G /BPC 8 /F /Fl "
               f"/L {len(data)} ID ").encode() + data + b" EI Q"
    content = zlib.compress(content)
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        f"<< /Length {len(content)} /Filter /FlateDecode >>\nstream\n".encode() + content
        + b"\nendstream",
    ]
    path.write_bytes(_hand_pdf(objs))
    return path


def write_nested_forms_pdf(path: Path, levels: int = 5, fanout: int = 10) -> Path:
    """One page drawing a form that draws the form below it `fanout` times, `levels` deep, the
    last drawing one word: fanout**levels text objects from ~2 KB. pdfium parses every drawn
    copy when the page loads (levels=6: 1.7 GB and 3.5 s before anything can be counted)."""

    def form(body: bytes, res: str) -> bytes:
        return (f"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources {res} "
                f"/Length {len(body)} >>\nstream\n").encode() + body + b"\nendstream"

    top = 5 + levels  # the outermost form
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << "
        f"/Fp {top} 0 R >> >> /Contents {top + 1} 0 R >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        form(b"BT /F1 2 Tf 10 10 Td (x) Tj ET", "<< /Font << /F1 4 0 R >> >>"),
    ]
    for k in range(1, levels + 1):
        objs.append(form(b"/Fp Do\n" * fanout, f"<< /XObject << /Fp {4 + k} 0 R >> >>"))
    objs.append(b"<< /Length 6 >>\nstream\n/Fp Do\nendstream")
    path.write_bytes(_hand_pdf(objs))
    return path
