"""Does the model fit the documents? Two cheap signs read off a finished run, so a user is told
when confident-looking labels are likely wrong:

- most pages' early answers fall below the re-route bar (the model is unsure of most of them);
- a model trained on the synthetic corpus (`doctriage synth`) meets documents made elsewhere:
  it knows only the synthetic classes and labels anything else as one of them, often at high
  confidence, so its confidence alone never gives this away.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from pipelines.sources import open_uri
from workers.run_report import DocumentReport

log = logging.getLogger(__name__)

# Documents opened to read their origin: enough to see a foreign batch, bounded so a run of
# 100,000 documents does not reopen them all.
ORIGIN_SAMPLE = 32

TRAIN_HINT = (
    "train one on your documents (a folder with one sub-folder per class): "
    "doctriage train DATA --out MODEL, then doctriage run ... --model MODEL"
)


def trained_on_synthetic(model: Any) -> bool:
    """The bundle says its corpus was synthetic, or its classes are exactly synth's."""
    from pipelines.synth import CLASSES

    corpus = (getattr(model, "metadata", None) or {}).get("corpus")
    if isinstance(corpus, dict) and corpus.get("kind") == "synthetic":
        return True
    return set(getattr(model, "label_names", ())) == set(CLASSES)


def below_bar(reports: Sequence[DocumentReport], bar: float) -> tuple[int, int]:
    """(pages whose early answer is below `bar`, pages with an early answer)."""
    conf = [p.early_confidence for r in reports for p in r.pages if p.early_confidence is not None]
    return sum(c < bar for c in conf), len(conf)


def foreign_documents(
    reports: Sequence[DocumentReport],
    opener: Callable[[str], BinaryIO] = open_uri,
    sample: int = ORIGIN_SAMPLE,
) -> tuple[int, int]:
    """(documents not made by `doctriage synth`, documents checked) over an even sample of the
    documents that got a label; one that cannot be opened any more is not counted."""
    from pipelines.synth.origin import made_by_synth

    labelled = [r for r in reports if any(p.label for p in r.pages)]
    picked = labelled[:: max(1, math.ceil(len(labelled) / sample))][:sample]
    foreign = checked = 0
    for r in picked:
        try:
            with opener(r.uri) as fh:
                synthetic = made_by_synth(fh, r.name)
        except Exception as exc:  # gone or unreachable since: a hint is never worth a failed run
            log.debug("cannot check where %s comes from: %s", r.name, exc)
            continue
        checked += 1
        foreign += not synthetic
    return foreign, checked


def fit_warning(
    model: Any,
    reports: Sequence[DocumentReport],
    reroute_below: float,
    *,
    model_name: str = "the model",
    opener: Callable[[str], BinaryIO] = open_uri,
) -> str | None:
    """One warning line when the answers suggest the model does not fit the documents, else
    None: more than half the pages below the re-route bar, or a synthetic-trained model used on
    documents `doctriage synth` did not make."""
    low, answered = below_bar(reports, reroute_below)
    unsure = (
        f"{low} of {answered} pages scored below the re-route bar ({reroute_below:g})"
        if answered and low * 2 > answered else None
    )
    foreign = checked = 0
    if trained_on_synthetic(model):
        foreign, checked = foreign_documents(reports, opener)
    if foreign:
        names = list(getattr(model, "label_names", ()))
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        return (
            f"warning: {model_name} knows {len(names)} synthetic classes only ({shown}), "
            f"learnt from `doctriage synth` documents, and {foreign} of the {checked} documents "
            f"checked {'was' if foreign == 1 else 'were'} made elsewhere"
            + (f"; {unsure}" if unsure else "")
            + f": expect wrong labels on those, even at high confidence; {TRAIN_HINT}"
        )
    if unsure:
        return f"warning: {unsure}: {model_name} does not seem to fit these documents; {TRAIN_HINT}"
    return None
