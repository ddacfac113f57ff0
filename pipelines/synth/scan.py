"""Turn a born-digital PDF into a scanned-looking, image-only PDF (no text layer).

Each page is rendered with pdfium, made grey, slightly rotated (skew), blurred, speckled and
JPEG-compressed, the usual damage of an office scanner, then all pages are written as one image
PDF with Pillow. Only the pixels survive, so ingestion has to OCR these pages.
"""

from __future__ import annotations

import io
import random
import time
from dataclasses import dataclass

import numpy as np
import pypdfium2 as pdfium
from PIL import Image, ImageFilter

from pipelines.synth.origin import SYNTH_CREATOR

# Pillow writes the current time into the PDF info unless told otherwise; a fixed date keeps
# the bytes a function of the seed alone.
_FIXED_DATE = time.gmtime(946684800)  # 2000-01-01T00:00:00Z


@dataclass(frozen=True)
class ScanOptions:
    dpi: int = 150
    max_skew_deg: float = 2.0
    speckle: tuple[float, float] = (0.0005, 0.004)  # share of pixels flipped dark/light
    blur: tuple[float, float] = (0.0, 0.9)  # Gaussian radius in pixels
    jpeg_quality: tuple[int, int] = (30, 75)


def degrade(page: Image.Image, rng: random.Random, opts: ScanOptions) -> Image.Image:
    """Apply scanner damage to one greyscale page image."""
    img = page.convert("L")
    # Paper is never quite white and toner never quite black.
    lo, hi = rng.randint(0, 40), rng.randint(215, 250)
    img = img.point(lambda v: lo + v * (hi - lo) // 255)
    img = img.rotate(
        rng.uniform(-opts.max_skew_deg, opts.max_skew_deg),
        resample=Image.Resampling.BICUBIC,
        expand=False,
        fillcolor=hi,
    )
    radius = rng.uniform(*opts.blur)
    if radius > 0.15:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(img).copy()
    nrng = np.random.default_rng(rng.getrandbits(63))
    share = rng.uniform(*opts.speckle)
    mask = nrng.random(arr.shape) < share
    arr[mask] = np.where(nrng.random(int(mask.sum())) < 0.7, lo, hi)
    img = Image.fromarray(arr, mode="L")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(*opts.jpeg_quality))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def scan_pdf(pdf: bytes, rng: random.Random, opts: ScanOptions | None = None) -> bytes:
    """Rasterise every page of `pdf` and return an image-only PDF of the damaged pages."""
    opts = opts or ScanOptions()
    doc = pdfium.PdfDocument(pdf)
    try:
        pages = []
        for i in range(len(doc)):
            page = doc[i]
            bitmap = page.render(scale=opts.dpi / 72, grayscale=True)
            pages.append(degrade(bitmap.to_pil(), rng, opts))
            page.close()
    finally:
        doc.close()
    buf = io.BytesIO()
    pages[0].save(
        buf,
        "PDF",
        save_all=True,
        append_images=pages[1:],
        resolution=float(opts.dpi),
        title="",
        creator=SYNTH_CREATOR,  # how `doctriage run` tells synth documents apart
        creationDate=_FIXED_DATE,
        modDate=_FIXED_DATE,
    )
    return buf.getvalue()
