"""File folder (sparse tab label) and handwritten notes (jittered glyphs, pen strokes)."""

from __future__ import annotations

import random

from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas

from pipelines.synth import ink
from pipelines.synth.content import FOLDER_WORDS, HANDWRITTEN_PHRASES, MONTHS, Text
from pipelines.synth.writer import Writer


# -- file folder / handwritten -------------------------------------------------------------------
def file_folder(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(rng, max_pages=1)
    c, t = w.c, Text(rng)
    c.setFillGray(rng.uniform(0.82, 0.95))  # manila stock
    c.rect(0, 0, w.page_w, w.page_h, stroke=0, fill=1)
    tab_w = rng.uniform(150, 260)
    tab_x = rng.uniform(20, w.page_w - tab_w - 20)
    top = w.page_h - rng.uniform(30, 120)
    c.setFillGray(rng.uniform(0.9, 1.0))
    c.setLineWidth(1.2)
    c.roundRect(tab_x, top - 34, tab_w, 40, 8, stroke=1, fill=1)
    c.line(10, top - 34, w.page_w - 10, top - 34)
    c.setFillGray(0)
    label = f"{t.pick(FOLDER_WORDS)} - {t.company() if rng.random() < 0.5 else t.person()}"
    if rng.random() < 0.5:
        c.setFont(rng.choice(("Helvetica-Bold", "Courier-Bold", "Times-Bold")), 10)
        c.drawString(tab_x + 8, top - 22, label[: int(tab_w / 6.5)])
    else:
        ink.handwrite(c, label, (tab_x + 8, top - 22), ink.Pen(rng, size=12), tab_w - 20)
    for _ in range(rng.randint(0, 3)):  # stickers, file numbers, a date range
        x, y = rng.uniform(40, w.page_w - 200), rng.uniform(80, top - 80)
        if rng.random() < 0.5:
            c.setFont("Courier", rng.uniform(9, 14))
            c.drawString(
                x,
                y,
                rng.choice(
                    (
                        t.ref_no(),
                        f"{t.pick(MONTHS)} - {t.pick(MONTHS)} {rng.randint(1975, 1999)}",
                        f"Box {rng.randint(1, 400)}",
                    )
                ),
            )
        else:
            ink.handwrite(c, t.pick(HANDWRITTEN_PHRASES), (x, y), ink.Pen(rng, rng.uniform(12, 20)))
    return w


def handwritten(rng: random.Random, max_pages: int) -> Writer:
    """Pen on paper. The ink is put on the page as pixels (an image drawn from jittered glyphs),
    not as text, because real handwriting never has a text layer: only the printed bits (a pad
    header, the archive's document number) are text, so ingestion must decide to OCR the page."""
    w = Writer(rng, max_pages=max_pages)
    c, t = w.c, Text(rng)
    # One writer's hand for the whole document.
    pen = ink.Pen(
        rng, font=rng.choice(ink.HAND_FONTS), ink=rng.choice(ink.INKS), size=rng.uniform(13, 20)
    )
    ruled = rng.random() < 0.5
    pad = rng.choice(
        (
            f"From the desk of {t.person()}",
            "MEMO",
            t.company(),
            "NOTES",
            f"{t.company()} - Telephone Message",
        )
    )
    pages = rng.randint(1, max(1, min(max_pages, 2)))
    for p in range(pages):
        if p:
            w.new_page()
        top = w.page_h - rng.uniform(50, 110)

        def draw(pc: Canvas, top: float = top) -> None:
            if ruled:
                _ruled_paper(pc, w.page_w, top, pen.size * 1.7)
            y = _hand_lines(pc, w, t, pen, top)
            _pen_marks(pc, w, y)

        layer = ink.ink_layer(w.page_w, w.page_h, draw)
        c.drawImage(ImageReader(layer), 0, 0, width=w.page_w, height=w.page_h)
        if p == 0 and rng.random() < 0.5:  # a printed note pad header
            c.setFont(w.fonts.bold, 10)
            c.drawString(w.margin_x, w.page_h - 40, pad)
        # The archive's document number stamped in a corner (as on RVL-CDIP's tobacco pages).
        c.setFont("Helvetica", 7)
        c.drawRightString(w.page_w - 24, 18, f"{rng.randint(10**9, 10**10 - 1)}")
    return w


def _ruled_paper(pc: Canvas, page_w: float, top: float, spacing: float) -> None:
    pc.setStrokeColorRGB(0.6, 0.7, 0.9)
    pc.setLineWidth(0.5)
    y = top
    while y > 40:
        pc.line(20, y - 3, page_w - 20, y - 3)
        y -= spacing
    pc.setStrokeColorRGB(0, 0, 0)


def _hand_lines(pc: Canvas, w: Writer, t: Text, pen: ink.Pen, top: float) -> float:
    """Write lines of mixed phrases and words down from `top`; returns the y below the last."""
    rng = w.rng
    y = top
    for _ in range(rng.randint(3, 16)):
        if y < 60:
            break
        words: list[str] = []
        while sum(len(x) + 1 for x in words) < rng.randint(12, 45):
            words.append(
                t.pick(HANDWRITTEN_PHRASES)
                if rng.random() < 0.5
                else t.business_sentence().split(" ")[rng.randint(0, 4)]
            )
        x = w.margin_x + rng.uniform(-10, 30)
        ink.handwrite(pc, " ".join(words), (x, y), pen, max_width=w.page_w - x - 40)
        if rng.random() < 0.1:
            ink.scribble_line(pc, x, y + pen.size * 0.3, x + rng.uniform(60, 200), rng)
        y -= pen.size * rng.uniform(1.5, 2.1)
    return y


def _pen_marks(pc: Canvas, w: Writer, y: float) -> None:
    """Sometimes a signature under the text, sometimes a doodle anywhere."""
    rng = w.rng
    if rng.random() < 0.4:
        ink.signature(pc, w.page_w * 0.55, max(60, y - 20), rng)
    if rng.random() < 0.2:
        ink.circle_doodle(
            pc, rng.uniform(100, 500), rng.uniform(100, 600), rng.uniform(15, 40), rng
        )
