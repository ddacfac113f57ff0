"""Form and questionnaire: both have boxes, fill-in lines and check boxes."""

from __future__ import annotations

import itertools
import random

from reportlab.pdfbase.pdfmetrics import stringWidth

from pipelines.synth import ink
from pipelines.synth.content import (
    DEPARTMENTS,
    FORM_FIELDS,
    HANDWRITTEN_PHRASES,
    ITEMS,
    QUESTIONS,
    RATINGS,
    Text,
)
from pipelines.synth.layouts.common import BLUR, display_title, page_numbers
from pipelines.synth.writer import Writer


# -- form / questionnaire ------------------------------------------------------------------------
def _box_grid(w: Writer, t: Text, rows: int, filled: float) -> None:
    """Rows of labelled boxes; some filled in by hand or typewriter."""
    for _ in range(rows):
        h = w.rng.uniform(22, 32)
        if not w.ensure(h):
            return
        n = w.rng.randint(1, 4)
        cuts = sorted(w.rng.uniform(0.15, 0.85) for _ in range(n - 1))
        edges = [0.0, *cuts, 1.0]
        w.y -= h
        for a, b in itertools.pairwise(edges):
            x = w.x0 + a * w.width
            bw = (b - a) * w.width
            w.c.setLineWidth(0.6)
            w.c.rect(x, w.y, bw, h)
            w.c.setFont(w.fonts.regular, 6.5)
            w.c.drawString(x + 2, w.y + h - 7, t.pick(FORM_FIELDS).upper())
            if w.rng.random() < filled:
                value = t.rng.choice(
                    (t.person(), t.date(), t.money(10, 5000), t.ref_no(), t.pick(DEPARTMENTS))
                )
                if w.rng.random() < 0.5:
                    ink.handwrite(w.c, value, (x + 6, w.y + 4), ink.Pen(w.rng, size=10), bw - 12)
                else:
                    w.c.setFont("Courier", 9)
                    w.c.drawString(x + 6, w.y + 5, value[: int(bw / 6)])


def _fill_lines(w: Writer, t: Text, n: int, filled: float) -> None:
    for _ in range(n):
        if not w.ensure(24):
            return
        w.y -= 24
        label = t.pick(FORM_FIELDS) + ":"
        w.c.setFont(w.fonts.regular, w.size)
        w.c.drawString(w.x0, w.y, label)
        lx = w.x0 + stringWidth(label, w.fonts.regular, w.size) + 6
        w.c.setLineWidth(0.5)
        w.c.line(lx, w.y - 2, w.x0 + w.width, w.y - 2)
        if w.rng.random() < filled:
            text = t.person() if w.rng.random() < 0.5 else t.date()
            ink.handwrite(w.c, text, (lx + 8, w.y), ink.Pen(w.rng, size=11))


def _checkbox_options(w: Writer, options: tuple[str, ...], checked: int | None) -> None:
    if not w.ensure(18):
        return
    w.y -= 16
    x = w.x0 + 18
    for i, opt in enumerate(options):
        w.c.setLineWidth(0.6)
        w.c.rect(x, w.y - 1, 8, 8)
        if checked == i:
            ink.check_mark(w.c, x, w.y - 1, 8, w.rng)
        w.c.setFont(w.fonts.regular, w.size - 1)
        w.c.drawString(x + 12, w.y, opt)
        x += stringWidth(opt, w.fonts.regular, w.size - 1) + 34
        if x > w.x0 + w.width - 60:
            break


def form(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(
        rng,
        max_pages=max_pages,
        family=rng.choice(("Helvetica", "Helvetica", "Times")),
        size=rng.choice((8, 9, 10)),
    )
    t = Text(rng)
    w.line(t.company().upper(), font=w.fonts.bold, size=9, align=rng.choice(("left", "center")))
    display_title(
        w,
        rng.choice(
            (
                "EXPENSE REPORT",
                "PURCHASE REQUISITION",
                "CHECK REQUEST",
                "PERSONNEL ACTION FORM",
                "TRAVEL AUTHORIZATION",
                "REQUEST FOR PAYMENT",
                "TRANSMITTAL FORM",
                "SAMPLE REQUEST",
                "APPLICATION FORM",
            )
        ),
        size=(13, 18),
        gap_after=8,
    )
    filled = rng.uniform(0.2, 0.9)
    for _ in range(rng.randint(1, 3 * max_pages)):
        r = rng.random()
        if r < 0.5:
            _box_grid(w, t, rng.randint(3, 9), filled)
        elif r < 0.75:
            _fill_lines(w, t, rng.randint(3, 7), filled)
        else:
            rows = [["Date", "Description", "Account", "Amount"]]
            rows += [
                [t.date(), t.pick(ITEMS), t.ref_no(), t.money(5, 900)]
                for _ in range(rng.randint(3, 8))
            ]
            w.table(rows, numeric_from=3)
        if rng.random() < BLUR:  # check-box questions, as questionnaires have
            for _ in range(rng.randint(1, 3)):
                w.line(rng.choice(QUESTIONS), size=w.size)
                opts = rng.choice(RATINGS)
                _checkbox_options(w, opts, rng.choice((*range(len(opts)), None)))
        w.space(8)
    _fill_lines(w, t, rng.randint(1, 2), filled)
    w.c.setFont(w.fonts.regular, 6)
    w.c.drawString(
        w.margin_x,
        w.margin_bottom * 0.5,
        f"Form {rng.randint(100, 9999)} (Rev. {rng.randint(1, 12)}/{rng.randint(75, 99)})",
    )
    return w


def questionnaire(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(rng, max_pages=max_pages, family=rng.choice(("Helvetica", "Times")))
    w.footer = page_numbers
    t = Text(rng)
    display_title(
        w,
        rng.choice(
            (
                "CONSUMER QUESTIONNAIRE",
                "Product Survey",
                "SMOKER OPINION SURVEY",
                "Taste Test Questionnaire",
                "FOLLOW-UP INTERVIEW",
            )
        ),
        size=(13, 18),
        gap_after=6,
    )
    if rng.random() < 0.6:
        w.paragraph(
            "Please answer each question by checking the box that best describes your "
            "opinion. Your answers will be kept confidential.",
            font=w.fonts.italic,
        )
    if rng.random() < 0.35 + BLUR:  # respondent fields, as forms have
        if rng.random() < 0.5:
            _box_grid(w, t, rng.randint(1, 2), 0.5)
        else:
            _fill_lines(w, t, rng.randint(1, 3), 0.5)
        w.space(8)
    answered = rng.random() < 0.6
    n = rng.randint(4, 12 * max_pages)
    for i in range(1, n + 1):
        if w.full:
            break
        w.paragraph(
            f"{i}. {t.pick(QUESTIONS)}",
            font=w.fonts.bold if rng.random() < 0.5 else None,
            gap_after=0,
        )
        if rng.random() < 0.8:
            opts = rng.choice(RATINGS)
            _checkbox_options(w, opts, rng.randrange(len(opts)) if answered else None)
        else:
            for _ in range(rng.randint(1, 2)):
                w.space(16)
                w.c.setLineWidth(0.4)
                w.c.line(w.x0 + 18, w.y, w.x0 + w.width, w.y)
            if answered:
                ink.handwrite(
                    w.c, t.pick(HANDWRITTEN_PHRASES), (w.x0 + 24, w.y + 3), ink.Pen(rng, 11)
                )
        w.space(8)
    return w
