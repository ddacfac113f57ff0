"""Invoice, budget and specification: documents built around tables of numbers."""

from __future__ import annotations

import random

from pipelines.synth.content import DEPARTMENTS, ITEMS, SPEC_SUBJECTS, Text
from pipelines.synth.layouts.common import BLUR, display_title, letterhead, page_numbers
from pipelines.synth.writer import Writer


# -- invoice / budget ----------------------------------------------------------------------------
def invoice(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(rng, max_pages=max_pages)
    t = Text(rng)
    if rng.random() < 0.7:
        letterhead(w, t, t.company())
    if rng.random() > BLUR:  # some invoices lack the word in large type
        display_title(
            w,
            rng.choice(("INVOICE", "Invoice", "STATEMENT", "BILL")),
            size=(16, 26),
            align=("left", "right"),
            gap_after=6,
        )
    w.line(f"Invoice No. {t.ref_no()}    Date: {t.date()}")
    if rng.random() < 0.6:
        w.line(
            f"Customer P.O. {rng.randint(10000, 99999)}    Terms: "
            f"{rng.choice(('Net 30', 'Net 10', 'Due on receipt', '2% 10, Net 30'))}"
        )
    w.space(8)
    w.line("Bill To:", font=w.fonts.bold)
    for ln in [t.company(), *t.address_lines()]:
        w.line(ln, indent=12)
    w.space(10)
    rows = [["Qty", "Description", "Unit Price", "Amount"]]
    total = 0.0
    for _ in range(rng.randint(2, 14 + 24 * (max_pages - 1))):
        q = rng.randint(1, 40)
        p = rng.uniform(2, 900)
        total += q * p
        rows.append([str(q), t.pick(ITEMS), f"{p:,.2f}", f"{q * p:,.2f}"])
    tax = total * rng.choice((0, 0.045, 0.06, 0.0725))
    rows += [
        ["", "Subtotal", "", f"{total:,.2f}"],
        ["", "Tax", "", f"{tax:,.2f}"],
        ["", "TOTAL DUE", "", f"${total + tax:,.2f}"],
    ]
    wd = w.width
    w.table(
        rows,
        widths=[wd * 0.1, wd * 0.5, wd * 0.2, wd * 0.2],
        numeric_from=2,
        grid=rng.random() < 0.6,
        bold_rows=(len(rows) - 1,),
    )
    if rng.random() < 0.6:
        w.paragraph(
            f"Please remit payment to {t.company()}, {', '.join(t.address_lines())}. "
            "Thank you for your business.",
            size=w.size - 1,
        )
    return w


def budget(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(rng, max_pages=max_pages, landscape=rng.random() < 0.25)
    w.footer = page_numbers if rng.random() < 0.5 else None
    t = Text(rng)
    year = rng.randint(1980, 1999)
    if rng.random() < BLUR:  # a company letterhead, as invoices have
        letterhead(w, t, t.company())
    display_title(
        w,
        rng.choice(
            (
                f"{year} BUDGET",
                f"Proposed Budget - FY {year}",
                "BUDGET SUMMARY",
                f"{t.pick(DEPARTMENTS)} Budget {year}",
                "Budget Request",
                "PROJECT COST ESTIMATE",
            )
        ),
        size=(13, 18),
    )
    w.line(
        f"{t.pick(DEPARTMENTS)} - prepared by {t.person()}, {t.date()}",
        size=w.size - 1,
        align="center",
        gap_after=10,
    )
    for _ in range(rng.randint(1, 3 * max_pages)):
        if w.full:
            break
        rows = _budget_rows(rng, t, year)
        if rng.random() < 0.5:
            w.line(t.pick(DEPARTMENTS), font=w.fonts.bold)
        w.table(rows, grid=rng.random() < 0.5, bold_rows=(len(rows) - 1,))
        w.space(10)
    if rng.random() < 0.5:
        w.paragraph("Notes: " + t.business_paragraph(1, 3), size=w.size - 1)
    return w


def _budget_rows(rng: random.Random, t: Text, year: int) -> list[list[str]]:
    """One budget table: period columns, or (BLUR) an invoice-like line-item list."""
    cols = rng.choice(
        (
            [f"{year - 1} Actual", f"{year} Budget", "Variance"],
            ["Q1", "Q2", "Q3", "Q4", "Total"],
            [str(year), str(year + 1)],
            ["Budget", "Spent", "Remaining", "%"],
        )
    )
    if rng.random() < BLUR:  # a line-item budget: quantities and unit costs, like an invoice
        rows = [["Description", "Qty", "Unit Cost", "Amount"]]
        total = 0.0
        for _ in range(rng.randint(4, 14)):
            q, u = rng.randint(1, 50), rng.uniform(5, 2500)
            total += q * u
            rows.append([t.pick(ITEMS), str(q), f"{u:,.2f}", f"{q * u:,.2f}"])
        rows.append(["Total", "", "", f"{total:,.2f}"])
    else:
        rows = [["Category", *cols]]
        sums = [0.0] * len(cols)
        for _ in range(rng.randint(4, 14)):
            vals = [rng.uniform(1, 800) * 1000 for _ in cols]
            sums = [a + b for a, b in zip(sums, vals, strict=True)]
            rows.append([t.pick(ITEMS), *[f"{v:,.0f}" for v in vals]])
        rows.append(["Total", *[f"{v:,.0f}" for v in sums]])
    return rows


# -- specification -------------------------------------------------------------------------------
def specification(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(rng, max_pages=max_pages, family=rng.choice(("Helvetica", "Courier", "Times")))
    t = Text(rng)
    spec_no, rev = t.ref_no(), rng.choice("ABCDEFG")
    w.header = lambda wr: wr.line(f"Specification {spec_no}  Rev. {rev}", size=7, align="right")
    display_title(
        w,
        rng.choice(
            (
                "SPECIFICATION",
                "MATERIAL SPECIFICATION",
                "PRODUCT SPECIFICATION",
                "Purchase Specification",
            )
        ),
        size=(13, 18),
    )
    w.table(
        [
            ["Spec. No.", "Revision", "Effective Date", "Supersedes"],
            [spec_no, rev, t.date(), t.ref_no()],
        ],
        numeric_from=9,
    )
    w.space(6)
    material = t.pick(
        ("Cigarette Paper", "Filter Tow", "Tipping Paper", "Carton Board", "Adhesive", "Menthol")
    )
    w.line(
        f"Title: {material}",
        font=w.fonts.bold,
        gap_after=6,
    )
    _spec_clauses(w, t, max_pages)
    if rng.random() < 0.6 and w.ensure(50):
        w.space(20)
        for who in ("Prepared by", "Approved by"):
            w.line(f"{who}: ______________________   Date: __________", size=w.size - 1)
            w.space(8)
    return w


def _spec_clauses(w: Writer, t: Text, max_pages: int) -> None:
    """Numbered subjects in random order, each with clauses and sometimes a property table."""
    rng = w.rng
    subjects = list(SPEC_SUBJECTS)
    rng.shuffle(subjects)
    for i, sub in enumerate(subjects[: rng.randint(3, 6 * max_pages)], start=1):
        if w.full:
            break
        w.line(f"{i}.0  {sub.upper()}", font=w.fonts.bold)
        for j in range(1, rng.randint(2, 4)):
            w.paragraph(f"{i}.{j}  {t.spec_clause()}", indent=12, gap_after=2)
        if rng.random() < 0.35:
            w.table(_spec_property_rows(rng, t))
        w.space(4)


def _spec_property_rows(rng: random.Random, t: Text) -> list[list[str]]:
    """Min./target/max. of a few properties (+-10% around a random target)."""
    rows = [["Property", "Min.", "Target", "Max.", "Unit"]]
    rows += [
        [
            t.pick(SPEC_SUBJECTS),
            f"{v * 0.9:.1f}",
            f"{v:.1f}",
            f"{v * 1.1:.1f}",
            rng.choice(("mm", "g/m2", "%", "CU", "N", "s")),
        ]
        for v in (rng.uniform(1, 200) for _ in range(rng.randint(2, 6)))
    ]
    return rows
