"""Scientific report, scientific publication and resume: shared sections and prose."""

from __future__ import annotations

import random

from pipelines.synth.content import (
    DEGREES,
    DEPARTMENTS,
    RESUME_SECTIONS,
    SCI_SECTIONS,
    SCI_TOPICS,
    TITLES,
    Text,
)
from pipelines.synth.layouts.common import BLUR, page_numbers
from pipelines.synth.writer import Writer


# -- resume --------------------------------------------------------------------------------------
def resume(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(rng, max_pages=max_pages)
    t = Text(rng)
    name = t.person()
    if rng.random() < 0.3:
        w.line(
            rng.choice(("CURRICULUM VITAE", "RESUME", "Biographical Sketch")),
            font=w.fonts.bold,
            align="center",
            gap_after=4,
        )
    w.line(name, font=w.fonts.bold, size=rng.uniform(14, 20), align=rng.choice(("left", "center")))
    w.line(
        " | ".join([*t.address_lines(), t.phone()]),
        size=w.size - 1,
        align=rng.choice(("left", "center")),
    )
    w.rule()
    sections = list(RESUME_SECTIONS)
    rng.shuffle(sections)
    for sec in ["Education", *[s for s in sections if s != "Education"][: rng.randint(2, 5)]]:
        if w.full:
            break
        w.space(6)
        w.line(sec.upper() if rng.random() < 0.5 else sec, font=w.fonts.bold, size=w.size + 1)
        for _ in range(rng.randint(1, 2 + 2 * max_pages)):
            start = rng.randint(1960, 1995)
            if sec == "Education":
                school = t.pick(("Virginia", "Kentucky", "Chicago", "Michigan", "Texas", "Oregon"))
                w.line(f"{start}    {t.pick(DEGREES)}, University of {school}")
            else:
                w.line(
                    f"{start}-{start + rng.randint(1, 8)}    {t.pick(TITLES)}, {t.company()}",
                    font=w.fonts.italic if rng.random() < 0.5 else None,
                )
                if rng.random() < 0.6:
                    w.paragraph(
                        t.science_sentence() if rng.random() < 0.5 else t.business_sentence(),
                        indent=60,
                        size=w.size - 0.5,
                        gap_after=2,
                    )
    return w


# -- scientific report / publication -------------------------------------------------------------
def _sci_sections(w: Writer, t: Text, numbered: bool, tables: float) -> None:
    sections = list(SCI_SECTIONS[1:7])
    w.rng.shuffle(sections)
    for i, sec in enumerate(sections[: w.rng.randint(2, 6)], start=1):
        if w.full:
            return
        title = f"{i}. {sec.upper()}" if numbered else sec
        w.space(4)
        w.line(title, font=w.fonts.bold)
        for _ in range(w.rng.randint(1, 2 * w.max_pages)):
            w.paragraph(
                t.science_paragraph(),
                justify=w.rng.random() < 0.5,
                first_indent=12 if w.rng.random() < 0.5 else 0,
            )
        if w.rng.random() < tables:
            w.line(
                f"Table {i}. {t.pick(SCI_TOPICS).capitalize()} by treatment group",
                font=w.fonts.italic,
                size=w.size - 1,
            )
            rows = [["Group", "N", "Mean", "S.D."]]
            rows += [
                [
                    w.rng.choice(
                        ("Control", "Low dose", "High dose", "Test A", "Test B", "Reference")
                    ),
                    str(w.rng.randint(4, 60)),
                    f"{w.rng.uniform(0, 100):.2f}",
                    f"{w.rng.uniform(0, 10):.2f}",
                ]
                for _ in range(w.rng.randint(3, 6))
            ]
            w.table(rows, grid=False)


def scientific_report(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(rng, max_pages=max_pages)
    w.footer = page_numbers if rng.random() < 0.7 else None
    t = Text(rng)
    if rng.random() < 0.5:
        w.line(
            rng.choice(("CONFIDENTIAL", "RESEARCH REPORT", "TECHNICAL REPORT", "PROGRESS REPORT")),
            font=w.fonts.bold,
            align=rng.choice(("left", "right", "center")),
        )
    w.line(t.company(), size=w.size - 1)
    w.line(
        f"Report No. {t.ref_no()}    Project {rng.randint(1000, 9999)}    {t.date()}",
        size=w.size - 1,
        gap_after=10,
    )
    w.line(
        f"{t.pick(SCI_TOPICS).title()} in {t.pick(SCI_TOPICS).title()}",
        font=w.fonts.bold,
        size=w.size + rng.uniform(2, 6),
        align="center",
    )
    w.line(f"Prepared by {t.person()} and {t.person()}", align="center", gap_after=8)
    if rng.random() < 0.4:
        w.line("Distribution: " + ", ".join(t.person() for _ in range(3)), size=w.size - 1)
    if rng.random() < BLUR + 0.1:  # an abstract, as publications have
        w.line("Abstract" if rng.random() < 0.5 else "SUMMARY", font=w.fonts.bold)
        w.paragraph(t.science_paragraph(3, 5), font=w.fonts.italic if rng.random() < 0.5 else None)
    if rng.random() < BLUR / 2:  # occasionally two columns, as publications have
        w.set_columns(2)
    _sci_sections(w, t, numbered=rng.random() < 0.7, tables=0.5)
    return w


def scientific_publication(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(
        rng,
        max_pages=max_pages,
        family=rng.choice(("Times", "Times", "Helvetica")),
        size=rng.choice((8, 8.5, 9, 9.5, 10)),
    )
    t = Text(rng)
    journal = _journal_masthead(w)
    w.line(
        f"{t.pick(SCI_TOPICS).capitalize()} and {t.pick(SCI_TOPICS)} in "
        f"{t.pick(('rats', 'human smokers', 'cell cultures', 'mainstream smoke', 'volunteers'))}",
        font=w.fonts.bold,
        size=w.size + rng.uniform(4, 8),
        align="center",
    )
    w.line(", ".join(t.initials_name() for _ in range(rng.randint(2, 5))), align="center")
    w.line(
        f"{t.pick(DEPARTMENTS)}, {t.company()}, {t.address_lines()[1]}",
        font=w.fonts.italic,
        size=w.size - 1,
        align="center",
        gap_after=6,
    )
    if rng.random() > BLUR / 2:
        w.line("Abstract" if rng.random() < 0.6 else "ABSTRACT", font=w.fonts.bold)
        w.paragraph(t.science_paragraph(3, 6), justify=True)
    if rng.random() < 0.5:
        w.line(
            f"Key words: {', '.join(rng.sample(SCI_TOPICS, 3))}",
            font=w.fonts.italic,
            size=w.size - 1,
            gap_after=4,
        )
    if rng.random() > BLUR:  # most publications run in two columns
        w.set_columns(2, gap=rng.uniform(12, 22))
    _sci_sections(w, t, numbered=rng.random() < 0.4, tables=0.3)
    if not w.full:
        _references(w, t, journal)
    return w


def _journal_masthead(w: Writer) -> str:
    """The citation line over the title; returns the journal, which the references cite."""
    rng = w.rng
    journal = rng.choice(
        (
            "J. Agric. Food Chem.",
            "Toxicology Letters",
            "Mutation Research",
            "Journal of Chromatography",
            "Food Chem. Toxicol.",
            "Beitrage zur Tabakforschung",
            "Analytical Chemistry",
        )
    )
    w.line(
        f"{journal} {rng.randint(5, 60)} ({rng.randint(1975, 1999)}) "
        f"{rng.randint(1, 900)}-{rng.randint(901, 999)}",
        font=w.fonts.italic,
        size=7.5,
    )
    w.rule(0.5)
    return journal


def _references(w: Writer, t: Text, journal: str) -> None:
    rng = w.rng
    w.line("References", font=w.fonts.bold)
    for i in range(1, rng.randint(3, 9)):
        w.paragraph(
            f"{i}. {t.initials_name()}, {t.initials_name()}: {journal} "
            f"{rng.randint(5, 60)}, {rng.randint(1, 900)} ({rng.randint(1960, 1995)}).",
            size=w.size - 1.5,
            gap_after=1,
        )
