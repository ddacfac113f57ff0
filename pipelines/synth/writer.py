"""A small flowing-text writer over a reportlab canvas: lines, wrapped paragraphs, tables and
columns, with page breaks, running headers/footers and a hard page cap.

Why not platypus: the layouts need exact control of positions (boxes, letterheads, tab labels)
and the cap on pages (scanned documents stay short because they are OCR'd later), which is
simpler on the bare canvas.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

from pipelines.synth.origin import SYNTH_CREATOR

# The standard 14 fonts grouped by family: (regular, bold, italic, bold-italic).
FAMILIES: dict[str, tuple[str, str, str, str]] = {
    "Helvetica": ("Helvetica", "Helvetica-Bold", "Helvetica-Oblique", "Helvetica-BoldOblique"),
    "Times": ("Times-Roman", "Times-Bold", "Times-Italic", "Times-BoldItalic"),
    "Courier": ("Courier", "Courier-Bold", "Courier-Oblique", "Courier-BoldOblique"),
}
LETTER = (612.0, 792.0)
A4 = (595.28, 841.89)


@dataclass
class Fonts:
    regular: str
    bold: str
    italic: str
    bold_italic: str

    @classmethod
    def of(cls, family: str) -> Fonts:
        return cls(*FAMILIES[family])


class Writer:
    """Flows content down the page (and across columns), breaking pages up to `max_pages`.

    Once the cap is reached `full` turns true and further content is dropped, so layouts can
    simply keep writing until `full` or until their own length budget is spent.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        max_pages: int,
        landscape: bool = False,
        family: str | None = None,
        size: float | None = None,
    ) -> None:
        self.rng = rng
        self.buf = io.BytesIO()
        w, h = rng.choice((LETTER, LETTER, LETTER, A4))
        self.page_w, self.page_h = (h, w) if landscape else (w, h)
        # invariant=1 fixes the creation date and document id: same seed, same bytes.
        self.c = Canvas(self.buf, pagesize=(self.page_w, self.page_h), invariant=1)
        self.c.setCreator(SYNTH_CREATOR)  # how `doctriage run` tells synth documents apart
        self.family = family or rng.choice(tuple(FAMILIES))
        self.fonts = Fonts.of(self.family)
        self.size = size or rng.choice((9, 9.5, 10, 10.5, 11, 11, 12))
        self.leading_factor = rng.uniform(1.15, 1.45)
        self.margin_x = rng.uniform(48, 90)
        self.margin_top = rng.uniform(44, 80)
        self.margin_bottom = rng.uniform(44, 72)
        self.max_pages = max_pages
        self.pages = 1
        self.full = False
        self.header: Callable[[Writer], None] | None = None
        self.footer: Callable[[Writer], None] | None = None
        self.set_columns(1)
        self.y = self.top

    # -- geometry ---------------------------------------------------------------------------
    @property
    def top(self) -> float:
        return self.page_h - self.margin_top

    @property
    def bottom(self) -> float:
        return self.margin_bottom

    @property
    def x0(self) -> float:
        return self.col_x[self.col]

    @property
    def width(self) -> float:
        return self.col_w

    def set_columns(self, n: int, gap: float = 18.0, top: float | None = None) -> None:
        """Flow into `n` equal columns from `top` (default: the current line) down."""
        full_w = self.page_w - 2 * self.margin_x
        self.col_w = (full_w - gap * (n - 1)) / n
        self.col_x = [self.margin_x + i * (self.col_w + gap) for i in range(n)]
        self.col = 0
        self.col_top = top if top is not None else getattr(self, "y", self.top)

    # -- paging -----------------------------------------------------------------------------
    def new_page(self) -> bool:
        """Start a new page; returns False (and sets `full`) when the page cap is reached."""
        if self.full:
            return False
        if self.pages >= self.max_pages:
            self.full = True
            return False
        self._decorate()
        self.c.showPage()
        self.pages += 1
        self.y = self.top
        if self.header:
            self.header(self)
        self.col = 0
        self.col_top = self.y
        return True

    def next_column(self) -> bool:
        if self.col + 1 < len(self.col_x):
            self.col += 1
            self.y = self.col_top
            return True
        return self.new_page()

    def ensure(self, height: float) -> bool:
        """Make room for `height` points, moving to the next column/page if needed."""
        if self.full:
            return False
        if self.y - height >= self.bottom:
            return True
        return self.next_column()

    def _decorate(self) -> None:
        if self.footer:
            self.footer(self)

    def finish(self) -> bytes:
        self._decorate()
        self.c.showPage()
        self.c.save()
        return self.buf.getvalue()

    # -- text -------------------------------------------------------------------------------
    def leading(self, size: float) -> float:
        return size * self.leading_factor

    def _style(self, font: str | None, size: float | None) -> tuple[str, float]:
        """The given font and size, or the document's body text ones."""
        return font or self.fonts.regular, size or self.size

    def line(
        self,
        text: str,
        *,
        font: str | None = None,
        size: float | None = None,
        indent: float = 0.0,
        align: str = "left",
        gap_after: float = 0.0,
    ) -> None:
        font, size = self._style(font, size)
        if not self.ensure(self.leading(size)):
            return
        self.y -= self.leading(size)
        self.c.setFont(font, size)
        if align == "center":
            self.c.drawCentredString(self.x0 + self.width / 2, self.y, text)
        elif align == "right":
            self.c.drawRightString(self.x0 + self.width, self.y, text)
        else:
            self.c.drawString(self.x0 + indent, self.y, text)
        self.y -= gap_after

    def paragraph(
        self,
        text: str,
        *,
        font: str | None = None,
        size: float | None = None,
        indent: float = 0.0,
        first_indent: float = 0.0,
        gap_after: float | None = None,
        justify: bool = False,
    ) -> None:
        font, size = self._style(font, size)
        lines = simpleSplit(text, font, size, self.width - indent - first_indent)
        for i, ln in enumerate(lines):
            if self.full:
                return
            last = i == len(lines) - 1
            if justify and not last and " " in ln:
                self._justified(ln, font, size, indent)
            else:
                self.line(ln, font=font, size=size, indent=indent + (first_indent if i == 0 else 0))
        self.y -= self.leading(size) * 0.5 if gap_after is None else gap_after

    def _justified(self, text: str, font: str, size: float, indent: float) -> None:
        if not self.ensure(self.leading(size)):
            return
        self.y -= self.leading(size)
        words = text.split(" ")
        avail = self.width - indent
        spare = avail - sum(stringWidth(w, font, size) for w in words)
        gap = spare / (len(words) - 1)
        x = self.x0 + indent
        self.c.setFont(font, size)
        for w in words:
            self.c.drawString(x, self.y, w)
            x += stringWidth(w, font, size) + gap

    def space(self, points: float) -> None:
        self.y -= points

    def rule(self, thickness: float = 0.8, gap: float = 4.0) -> None:
        if not self.ensure(gap * 2):
            return
        self.y -= gap
        self.c.setLineWidth(thickness)
        self.c.line(self.x0, self.y, self.x0 + self.width, self.y)
        self.y -= gap

    # -- tables -----------------------------------------------------------------------------
    def table(
        self,
        rows: Sequence[Sequence[str]],
        *,
        widths: Sequence[float] | None = None,
        header: bool = True,
        grid: bool = True,
        size: float | None = None,
        numeric_from: int = 1,
        bold_rows: Sequence[int] = (),
    ) -> None:
        """Rows of cells; columns from `numeric_from` on are right-aligned (numbers)."""
        size = size or max(7.0, self.size - 1)
        ncols = max(len(r) for r in rows)
        if widths is None:
            first = self.width * self.rng.uniform(0.3, 0.45) if ncols > 1 else self.width
            rest = (self.width - first) / max(1, ncols - 1)
            widths = [first] + [rest] * (ncols - 1)
        row_h = size * 1.6
        for i, row in enumerate(rows):
            if not self.ensure(row_h):
                return
            top = self.y
            self.y -= row_h
            bold = (header and i == 0) or i in bold_rows
            self.c.setFont(self.fonts.bold if bold else self.fonts.regular, size)
            x = self.x0
            for j, cell in enumerate(row):
                w = widths[j]
                text = _fit(cell, self.fonts.bold if bold else self.fonts.regular, size, w - 6)
                if j >= numeric_from and not (header and i == 0):
                    self.c.drawRightString(x + w - 3, self.y + size * 0.45, text)
                else:
                    self.c.drawString(x + 3, self.y + size * 0.45, text)
                x += w
            if grid:
                self.c.setLineWidth(0.5)
                self.c.rect(self.x0, self.y, sum(widths), top - self.y)
                x = self.x0
                for w in widths[:-1]:
                    x += w
                    self.c.line(x, self.y, x, top)
            elif header and i == 0:
                self.c.setLineWidth(0.7)
                self.c.line(self.x0, self.y, self.x0 + sum(widths), self.y)
        self.y -= size


def _fit(text: str, font: str, size: float, width: float) -> str:
    """Truncate `text` so it fits `width` points (a table cell never spills into the next)."""
    while text and stringWidth(text, font, size) > width:
        text = text[:-1]
    return text
