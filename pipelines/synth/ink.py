"""Hand-made marks: jittered "handwriting", signatures, check marks and scribbles.

Handwriting is simulated by drawing each glyph of an italic standard font on its own, with a
random baseline drift, slant, size and spacing, in a dark ink colour, so it looks irregular in
the raster while staying cheap to produce.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import pypdfium2 as pdfium
from PIL import Image
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

HAND_FONTS = ("Helvetica-Oblique", "Times-Italic", "Courier-Oblique", "Times-BoldItalic")
INKS = ((0.05, 0.05, 0.25), (0.1, 0.1, 0.1), (0.15, 0.2, 0.45), (0.0, 0.0, 0.0))


@dataclass(frozen=True)
class Pen:
    """How a hand writes: glyph size, and a font and ink colour (drawn from HAND_FONTS and
    INKS with `rng` when not given)."""

    rng: random.Random
    size: float = 14.0
    font: str | None = None
    ink: tuple[float, float, float] | None = None


def handwrite(
    c: Canvas, text: str, at: tuple[float, float], pen: Pen, max_width: float | None = None
) -> float:
    """Draw `text` glyph by glyph from `at` (x, y); returns the x where it ended."""
    rng, size = pen.rng, pen.size
    x, y = at
    font = pen.font or rng.choice(HAND_FONTS)
    c.setFillColorRGB(*(pen.ink or rng.choice(INKS)))
    drift = 0.0
    start = x
    for ch in text:
        if max_width is not None and x - start > max_width:
            break
        drift += rng.uniform(-0.35, 0.35)
        drift = max(-3.0, min(3.0, drift))
        s = size * rng.uniform(0.88, 1.12)
        c.saveState()
        c.translate(x, y + drift)
        c.rotate(rng.uniform(-9, 9))
        c.setFont(font, s)
        c.drawString(0, 0, ch)
        c.restoreState()
        x += stringWidth(ch, font, s) * rng.uniform(0.85, 1.05)
    c.setFillColorRGB(0, 0, 0)
    return x


def signature(c: Canvas, x: float, y: float, rng: random.Random, width: float = 110.0) -> None:
    """A looping pen stroke standing in for a signature."""
    c.setStrokeColorRGB(*rng.choice(INKS))
    c.setLineWidth(rng.uniform(0.8, 1.6))
    p = c.beginPath()
    p.moveTo(x, y)
    n = rng.randint(5, 10)
    step = width / n
    for i in range(n):
        x0 = x + i * step
        p.curveTo(
            x0 + step * 0.3,
            y + rng.uniform(6, 22),
            x0 + step * 0.6,
            y - rng.uniform(2, 12),
            x0 + step,
            y + rng.uniform(-4, 6),
        )
    c.drawPath(p, stroke=1, fill=0)
    c.setStrokeColorRGB(0, 0, 0)
    c.setLineWidth(1)


def scribble_line(c: Canvas, x0: float, y: float, x1: float, rng: random.Random) -> None:
    """A wavy hand-drawn underline or strike."""
    c.setLineWidth(rng.uniform(0.7, 1.4))
    p = c.beginPath()
    p.moveTo(x0, y)
    n = max(2, int((x1 - x0) / 40))
    for i in range(1, n + 1):
        p.lineTo(x0 + (x1 - x0) * i / n, y + rng.uniform(-2, 2))
    c.drawPath(p, stroke=1, fill=0)


def check_mark(c: Canvas, x: float, y: float, size: float, rng: random.Random) -> None:
    """An X or a tick inside a box whose lower-left corner is (x, y)."""
    c.setLineWidth(rng.uniform(0.9, 1.6))
    if rng.random() < 0.5:
        c.line(x + 1, y + 1, x + size - 1, y + size - 1)
        c.line(x + 1, y + size - 1, x + size - 1, y + 1)
    else:
        c.line(x + 1, y + size * 0.5, x + size * 0.4, y + 1)
        c.line(x + size * 0.4, y + 1, x + size + 2, y + size + 3)
    c.setLineWidth(1)


def circle_doodle(c: Canvas, cx: float, cy: float, r: float, rng: random.Random) -> None:
    """An imperfect hand-drawn loop around something."""
    c.setLineWidth(rng.uniform(0.8, 1.5))
    p = c.beginPath()
    steps = 24
    for i in range(steps + 2):
        a = 2 * math.pi * i / steps
        rr = r * rng.uniform(0.92, 1.08)
        px, py = cx + rr * math.cos(a) * 1.4, cy + rr * math.sin(a)
        if i == 0:
            p.moveTo(px, py)
        else:
            p.lineTo(px, py)
    c.drawPath(p, stroke=1, fill=0)


def ink_layer(
    width: float, height: float, draw: Callable[[Canvas], None], dpi: int = 150
) -> Image.Image:
    """Rasterise what `draw` puts on a blank page of this size: marks that must be pixels, not
    text (handwriting), come back as a greyscale image to lay over the real page."""
    buf = io.BytesIO()
    scratch = Canvas(buf, pagesize=(width, height), invariant=1)
    draw(scratch)
    scratch.showPage()
    scratch.save()
    doc = pdfium.PdfDocument(buf.getvalue())
    try:
        page = doc[0]
        image = page.render(scale=dpi / 72, grayscale=True).to_pil().convert("L")
        page.close()
    finally:
        doc.close()
    return image
