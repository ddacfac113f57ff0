"""Bad documents for the workflow-level tests (imported as `badinputs`): each builder writes one
file and says which one-line reason the document row must end up with."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from relkit import text_pdf_bytes

# The options the bad-input runs use: small limits so the limit cases stay cheap.
MAX_PAGES = 5
OCR_TIMEOUT_S = 0.05


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def decompression_bomb(side: int = 12_000) -> bytes:
    """A real grey PNG, side x side of zeros: ~150 KB that would decode to side^2 bytes."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def scan_png(lines: int = 12) -> bytes:
    im = Image.new("L", (1700, 2200), 255)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=40)
    for i in range(lines):
        draw.text((120, 150 + i * 80), f"line {i} of a scanned page nobody can wait for",
                  fill=0, font=font)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def corrupt_tiff() -> bytes:
    frames = [Image.new("L", (400, 300), 255) for _ in range(2)]
    for n, f in enumerate(frames, 1):
        ImageDraw.Draw(f).text((20, 20), f"page {n}", fill=0)
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:],
                   compression="tiff_lzw")
    data = bytearray(buf.getvalue())
    start = len(data) // 2 + len(data) // 4  # inside the second page's strip
    data[start : start + 200] = b"\xff" * 200
    return bytes(data)


def garbage_xref() -> bytes:
    data = text_pdf_bytes(2, "xref")
    start, end = data.rfind(b"\nxref"), data.rfind(b"startxref")
    return data[:start] + b"\n" + b"#garbage#" * 20 + b"\n" + data[end:]


# name -> (bytes builder, expected reason fragment, pages kept before the error)
BAD: dict[str, tuple[Callable[[], bytes], str, int]] = {
    "zero-bytes.pdf": (lambda: b"", "empty file (0 bytes)", 0),
    "truncated.pdf": (lambda: (d := text_pdf_bytes(5, "cut"))[: len(d) // 2],
                      "truncated PDF", 0),
    "encrypted.pdf": (lambda: text_pdf_bytes(2, "locked", encrypt="s3cret"),
                      "encrypted PDF (password required)", 0),
    "too-many-pages.pdf": (lambda: text_pdf_bytes(MAX_PAGES + 1, "long"),
                           f"too many pages ({MAX_PAGES + 1}; the limit is {MAX_PAGES})", 0),
    "poster.pdf": (lambda: text_pdf_bytes(1, "poster", pagesize=(14_000, 14_000)),
                   "too many pixels", 0),
    "bomb.png": (decompression_bomb, "too large to decode safely", 0),
    "corrupt.tif": (corrupt_tiff, "page 2: corrupt or unreadable image", 1),
    "letter.pdf": (lambda: b"Dear customer, this is plain text, not a document.\n" * 20,
                   "not a PDF, TIFF, PNG or JPEG file", 0),
    "broken-xref.pdf": (garbage_xref, "corrupt", 0),
}
# Run with ocr_timeout_s=OCR_TIMEOUT_S (a run of its own: the corrupt TIFF above needs OCR too).
SLOW_OCR = ("slow-ocr.png", scan_png, f"page 1: OCR timed out after {OCR_TIMEOUT_S:g} s")


def write_bad(folder: Path) -> dict[Path, tuple[str, int]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (build, reason, kept) in BAD.items():
        path = folder / name
        path.write_bytes(build())
        out[path] = (reason, kept)
    return out
