"""Pieces several layouts share: letterheads, signature blocks, body text, page numbers."""

from __future__ import annotations

from pipelines.synth import ink
from pipelines.synth.content import (
    CLOSINGS,
    TITLES,
    Text,
)
from pipelines.synth.writer import Writer

BLUR = 0.2  # share of documents that borrow a feature of their confusable partner


# -- shared pieces -------------------------------------------------------------------------------
def page_numbers(w: Writer) -> None:
    w.c.setFont(w.fonts.regular, 8)
    w.c.drawCentredString(w.page_w / 2, w.margin_bottom * 0.5, f"- {w.pages} -")


def letterhead(w: Writer, t: Text, company: str) -> None:
    style = w.rng.random()
    size = w.rng.uniform(14, 22)
    if style < 0.5:
        w.line(company.upper(), font=w.fonts.bold, size=size, align="center")
        w.line("  ".join(t.address_lines()) + "   " + t.phone(), size=8, align="center")
    else:
        w.line(company, font=w.fonts.bold_italic, size=size)
        w.line(t.address_lines()[0], size=8)
        w.line(t.phone(), size=8)
    w.rule(w.rng.uniform(0.5, 2.0), gap=6)
    w.space(w.rng.uniform(6, 24))


def signature_block(w: Writer, t: Text, name: str, closing: str | None = None) -> None:
    w.space(w.size * 0.8)
    w.line(closing or t.pick(CLOSINGS))
    if w.ensure(40) and w.rng.random() < 0.8:
        ink.signature(w.c, w.x0 + 4, w.y - 22, w.rng)
    w.space(30)
    w.line(name)
    if w.rng.random() < 0.7:
        w.line(t.pick(TITLES), size=w.size - 1)


def body(w: Writer, t: Text, paragraphs: int, *, indent: bool) -> None:
    for _ in range(paragraphs):
        w.paragraph(
            t.business_paragraph(), first_indent=24 if indent else 0, justify=w.rng.random() < 0.3
        )


def cc(w: Writer, t: Text) -> None:
    if w.rng.random() < 0.45:
        w.space(8)
        w.line("cc: " + ", ".join(t.person() for _ in range(w.rng.randint(1, 3))), size=w.size - 1)


def display_title(
    w: Writer,
    text: str,
    *,
    size: tuple[float, float],
    align: str | tuple[str, ...] = "center",
    gap_after: float = 0.0,
) -> None:
    """A bold title line at a random size within `size`; a tuple `align` is a choice drawn
    after the size (the order layouts have always drawn them in: same seed, same bytes)."""
    points = w.rng.uniform(*size)
    where = w.rng.choice(align) if isinstance(align, tuple) else align
    w.line(text, font=w.fonts.bold, size=points, align=where, gap_after=gap_after)
