"""One page-layout function per class; each draws a born-digital PDF with reportlab.

Confusable pairs are built to overlap on purpose: letter, memo and email share prose, names and
closings and differ mainly in their header block; form and questionnaire both have boxes and
fill-in lines; reports and publications share sections and prose; budgets and invoices are both
tables of money. A `BLUR` share of documents in each pair takes a feature of its partner, so the
classifier's confidence varies.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pipelines.synth.layouts.correspondence import email, letter, memo
from pipelines.synth.layouts.forms import form, questionnaire
from pipelines.synth.layouts.marks import file_folder, handwritten
from pipelines.synth.layouts.media import advertisement, news_article, presentation
from pipelines.synth.layouts.science import resume, scientific_publication, scientific_report
from pipelines.synth.layouts.tables import budget, invoice, specification
from pipelines.synth.writer import Writer

LAYOUTS: dict[str, Callable[[random.Random, int], Writer]] = {
    "letter": letter,
    "memo": memo,
    "email": email,
    "form": form,
    "questionnaire": questionnaire,
    "invoice": invoice,
    "budget": budget,
    "resume": resume,
    "scientific_report": scientific_report,
    "scientific_publication": scientific_publication,
    "specification": specification,
    "news_article": news_article,
    "advertisement": advertisement,
    "presentation": presentation,
    "file_folder": file_folder,
    "handwritten": handwritten,
}


def render(label: str, rng: random.Random, max_pages: int) -> tuple[bytes, int]:
    """Draw one born-digital document of class `label`: (PDF bytes, page count)."""
    w = LAYOUTS[label](rng, max_pages)
    return w.finish(), w.pages
