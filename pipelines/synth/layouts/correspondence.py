"""Letter, memo and email: shared prose and closings, different header blocks.

A `BLUR` share of each borrows its partner's feature (a letter with a Re: line, a memo with
a letterhead or salutation, an email with memo-style capital labels) so the trio stays hard."""

from __future__ import annotations

import random

from pipelines.synth.content import DEPARTMENTS, SCI_TOPICS, TITLES, Text
from pipelines.synth.layouts.common import (
    BLUR,
    body,
    cc,
    display_title,
    letterhead,
    signature_block,
)
from pipelines.synth.writer import Writer


# -- letter / memo / email -----------------------------------------------------------------------
def letter(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(
        rng, max_pages=max_pages, family=rng.choice(("Times", "Times", "Helvetica", "Courier"))
    )
    t = Text(rng)
    if rng.random() < 0.8:
        letterhead(w, t, t.company())
    w.line(t.date(), align=rng.choice(("left", "right")), gap_after=12)
    recipient = t.person()
    for ln in [recipient, t.pick(TITLES), t.company(), *t.address_lines()]:
        w.line(ln)
    w.space(12)
    if rng.random() < BLUR + 0.15:  # a subject line, as memos have
        w.line(
            f"Re: {t.pick((*SCI_TOPICS, 'the program', 'your letter'))}".title(), font=w.fonts.bold
        )
        w.space(6)
    salutation = rng.choice(("Dear {}:", "Dear {},", "Dear Mr. {}:", "Dear Dr. {}:"))
    w.line(
        salutation.format(
            recipient.split()[-1]
            if "Mr" in salutation or "Dr" in salutation
            else recipient.split()[0]
        ),
        gap_after=6,
    )
    body(w, t, rng.randint(2, 6 * max_pages), indent=rng.random() < 0.4)
    signature_block(w, t, t.person())
    if rng.random() < 0.4:
        w.line(f"{t.person()[0]}{t.person()[0]}:{t.pick('abcdefgh')}{t.pick('jklmn')}", size=8)
    cc(w, t)
    return w


def memo(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(rng, max_pages=max_pages)
    t = Text(rng)
    if rng.random() < BLUR:  # letterhead, as letters have
        letterhead(w, t, t.company())
    title = rng.choice(
        (
            "MEMORANDUM",
            "M E M O R A N D U M",
            "INTEROFFICE MEMORANDUM",
            "Inter-Office Memo",
            "MEMO",
            "INTER-OFFICE CORRESPONDENCE",
        )
    )
    if rng.random() > BLUR / 2:  # a few memos have no title at all
        display_title(w, title, size=(13, 22), align=("left", "center"), gap_after=14)
    fields = [
        ("TO:", t.person() if rng.random() < 0.7 else t.pick(DEPARTMENTS)),
        ("FROM:", t.person()),
        ("DATE:", t.date()),
        (rng.choice(("SUBJECT:", "RE:", "Subject:")), t.pick(SCI_TOPICS).title()),
    ]
    if rng.random() < 0.4:
        fields.insert(2, ("CC:", ", ".join(t.person() for _ in range(rng.randint(1, 2)))))
    if rng.random() < 0.3:
        fields = [(k.capitalize(), v) for k, v in fields]
    label_w = 70
    for k, v in fields:
        w.line(k, font=w.fonts.bold)
        w.c.setFont(w.fonts.regular, w.size)
        w.c.drawString(w.x0 + label_w, w.y, v)
        w.space(4)
    w.rule(rng.uniform(0.5, 1.8), gap=8)
    if rng.random() < BLUR:  # salutation, as letters/emails have
        w.line(f"Dear {t.person().split()[0]},", gap_after=4)
    body(w, t, rng.randint(2, 5 * max_pages), indent=False)
    if rng.random() < 0.5:
        w.line(f"{t.person()[0]}{t.person()[0]}", font=w.fonts.italic)
    cc(w, t)
    return w


def email(rng: random.Random, max_pages: int) -> Writer:
    w = Writer(rng, max_pages=max_pages, family=rng.choice(("Helvetica", "Courier", "Times")))
    t = Text(rng)
    if rng.random() < 0.5:  # the mail client's print banner
        w.line(f"{t.person()}", font=w.fonts.bold, size=w.size + 2)
        w.rule(1.5)
    sender, to = t.person(), t.person()
    header = [
        ("From:", f"{sender} <{t.email(sender)}>"),
        (
            rng.choice(("Sent:", "Date:")),
            f"{t.date()} {rng.randint(1, 12)}:{rng.randint(0, 59):02d} {rng.choice(('AM', 'PM'))}",
        ),
        ("To:", f"{to} <{t.email(to)}>" if rng.random() < 0.6 else t.email(to)),
        ("Subject:", rng.choice(("RE: ", "FW: ", "")) + t.pick(SCI_TOPICS).title()),
    ]
    if rng.random() < 0.5:
        header.insert(3, ("Cc:", "; ".join(t.email() for _ in range(rng.randint(1, 3)))))
    if rng.random() < BLUR:  # memo-style capital labels
        header = [(k.upper(), v) for k, v in header]
    for k, v in header:
        w.line(k, font=w.fonts.bold)
        w.c.setFont(w.fonts.regular, w.size)
        w.c.drawString(w.x0 + 60, w.y, v)
    w.space(12)
    w.line(
        rng.choice(
            (
                f"{to.split()[0]},",
                f"Hi {to.split()[0]},",
                f"{to.split()[0]} -",
                f"Dear {to.split()[0]},",
            )
        ),
        gap_after=4,
    )
    body(w, t, rng.randint(1, 4 * max_pages), indent=False)
    w.line(rng.choice(("Thanks,", "Regards,", "Best,", "-" + sender.split()[0])))
    w.line(sender)
    if rng.random() < 0.6:
        w.line(f"{t.pick(TITLES)} | {t.phone()}", size=w.size - 1)
    if rng.random() < 0.45:  # a quoted earlier message
        w.space(10)
        w.line("-----Original Message-----")
        for k, v in (
            ("From:", t.email()),
            ("Sent:", t.date()),
            ("To:", t.email(to)),
            ("Subject:", t.pick(SCI_TOPICS).title()),
        ):
            w.line(f"{k} {v}")
        w.space(6)
        body(w, t, rng.randint(1, 3), indent=False)
    return w
