"""News article (columns), advertisement (display type) and presentation (landscape slides)."""

from __future__ import annotations

import random
from typing import NamedTuple

from reportlab.pdfbase.pdfmetrics import stringWidth

from pipelines.synth.content import AD_BRANDS, AD_SLOGANS, NEWS_HEADS, SLIDE_TITLES, Text
from pipelines.synth.layouts.common import display_title
from pipelines.synth.writer import Writer


# -- news / advertisement / presentation ---------------------------------------------------------
def news_article(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(
        rng,
        max_pages=max_pages,
        family=rng.choice(("Times", "Times", "Helvetica")),
        size=rng.choice((8, 8.5, 9, 9.5)),
    )
    w.margin_x = rng.uniform(30, 50)
    w.set_columns(1)
    t = Text(rng)
    if rng.random() < 0.7:
        city, _ = t.pick(
            (("The Richmond", ""), ("Daily", ""), ("The Evening", ""), ("Tribune", ""))
        )
        w.line(
            f"{city} {rng.choice(('Times', 'Herald', 'Post', 'Gazette', 'Journal', 'Chronicle'))}",
            font="Times-Bold",
            size=rng.uniform(20, 34),
            align="center",
        )
        w.line(
            f"{t.date()}    Section {rng.choice('ABCD')}    Page {rng.randint(1, 40)}",
            size=7,
            align="center",
        )
        w.rule(rng.uniform(0.8, 2.5))
    display_title(w, t.pick(NEWS_HEADS), size=(16, 28), align=("left", "center"))
    if rng.random() < 0.5:
        w.line(f"By {t.person().upper()}", size=w.size - 1, gap_after=2)
        w.line(
            f"{rng.choice(('Staff Writer', 'Associated Press', 'Special to the Times'))}",
            font=w.fonts.italic,
            size=w.size - 1,
        )
    w.space(6)
    w.set_columns(rng.choice((2, 3, 3, 4)), gap=rng.uniform(8, 14))
    if rng.random() < 0.4 and w.ensure(120):  # a photo with its caption
        h = rng.uniform(80, 140)
        w.c.setFillGray(rng.uniform(0.4, 0.8))
        w.c.rect(w.x0, w.y - h, w.width, h, stroke=0, fill=1)
        w.c.setFillGray(0)
        w.y -= h
        w.paragraph(f"{t.person()} at {t.company()} on {t.date()}.", font=w.fonts.italic, size=7)
    for _ in range(rng.randint(3, 14 * max_pages)):
        if w.full:
            break
        w.paragraph(t.news_paragraph(), first_indent=8, justify=True, gap_after=2)
    return w


def advertisement(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(rng, max_pages=1, family=rng.choice(("Helvetica", "Times")))
    t = Text(rng)
    _ad_background(w)
    brand, size = t.pick(AD_BRANDS), rng.uniform(44, 96)
    brand_font = rng.choice((w.fonts.bold, w.fonts.bold_italic, "Times-Bold", "Helvetica-Bold"))
    _display_line(w, brand, brand_font, size, _BRAND)
    slogan = t.pick(AD_SLOGANS)
    _display_line(w, slogan, w.fonts.italic, rng.uniform(18, 34), _SLOGAN)
    _ad_small_print(w)
    return w


def _ad_background(w: Writer) -> None:
    """Sometimes a dark or tinted field behind the type, and up to four grey shapes."""
    c, rng = w.c, w.rng
    if rng.random() < 0.6:
        c.setFillGray(rng.uniform(0.0, 0.85))
        c.rect(
            0,
            rng.uniform(0, w.page_h * 0.4),
            w.page_w,
            rng.uniform(w.page_h * 0.2, w.page_h),
            stroke=0,
            fill=1,
        )
    for _ in range(rng.randint(0, 4)):
        c.setFillGray(rng.uniform(0.1, 0.95))
        if rng.random() < 0.5:
            c.circle(
                rng.uniform(0, w.page_w),
                rng.uniform(0, w.page_h),
                rng.uniform(20, 160),
                stroke=0,
                fill=1,
            )
        else:
            c.rect(
                rng.uniform(0, w.page_w),
                rng.uniform(0, w.page_h),
                rng.uniform(40, 300),
                rng.uniform(40, 300),
                stroke=0,
                fill=1,
            )


class _Display(NamedTuple):
    step: float  # points the size shrinks by until the line fits
    height: tuple[float, float]  # the baseline's range, as shares of the page height


_BRAND = _Display(step=4, height=(0.45, 0.8))
_SLOGAN = _Display(step=2, height=(0.25, 0.42))


def _display_line(w: Writer, text: str, font: str, size: float, display: _Display) -> None:
    """Centred display type, shrunk until it fits, at a random share of the page height."""
    c, rng = w.c, w.rng
    while stringWidth(text, font, size) > w.page_w - 40:
        size -= display.step
    c.setFillGray(rng.choice((0.0, 0.0, 1.0, 0.2)))
    c.setFont(font, size)
    c.drawCentredString(w.page_w / 2, rng.uniform(*display.height) * w.page_h, text)


def _ad_small_print(w: Writer) -> None:
    """An optional tag line and the boxed warning found on cigarette ads."""
    c, rng = w.c, w.rng
    if rng.random() < 0.5:
        c.setFont(w.fonts.regular, rng.uniform(10, 14))
        c.drawCentredString(
            w.page_w / 2,
            0.2 * w.page_h,
            rng.choice(
                (
                    "Kings and 100s",
                    "Available now",
                    "Only $1.49",
                    "Also in Menthol",
                    "Ask for it by name",
                )
            ),
        )
    if rng.random() < 0.7:
        c.setFillGray(1)
        c.rect(30, 26, w.page_w * 0.55, 40, stroke=1, fill=1)
        c.setFillGray(0)
        c.setFont("Helvetica-Bold", 6.5)
        c.drawString(36, 54, "SURGEON GENERAL'S WARNING: Smoking Causes Lung Cancer,")
        c.drawString(36, 44, "Heart Disease, Emphysema, And May Complicate Pregnancy.")
    c.setFillGray(0)


def presentation(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(rng, max_pages=max_pages, landscape=True, family=rng.choice(("Helvetica", "Times")))
    t = Text(rng)
    framed = rng.random() < 0.5
    band = rng.random() < 0.5
    company = t.company()
    slides = rng.randint(1, max_pages)

    def deco(wr: Writer) -> None:
        c = wr.c
        if framed:
            c.setLineWidth(2)
            c.rect(20, 20, wr.page_w - 40, wr.page_h - 40)
        c.setFont(wr.fonts.regular, 8)
        c.drawString(30, 28, company)
        c.drawRightString(wr.page_w - 30, 28, str(wr.pages))

    w.footer = deco
    for s in range(slides):
        if s and not w.new_page():
            break
        if band:
            w.c.setFillGray(rng.uniform(0.2, 0.6))
            w.c.rect(0, w.page_h - 90, w.page_w, 90, stroke=0, fill=1)
            w.c.setFillGray(1)
        w.c.setFont(w.fonts.bold, rng.uniform(24, 36))
        w.c.drawString(w.margin_x, w.page_h - 62, t.pick(SLIDE_TITLES))
        w.c.setFillGray(0)
        w.y = w.page_h - 110
        for _ in range(rng.randint(2, 6)):
            size = rng.uniform(16, 24)
            w.line(
                rng.choice(("\u2022", "-", ">", "o")) + "  " + t.bullet(), size=size, gap_after=6
            )
            if rng.random() < 0.3:
                w.line("-  " + t.bullet(), size=size * 0.8, indent=30, gap_after=4)
    return w
