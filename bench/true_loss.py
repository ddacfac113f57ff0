"""The loss an audit-sample estimate stands for, computed outright: every stored early answer
against the full-depth answer of the same page, recomputed here from the page's artifact with
the same bundle (the staged forward is the one the workers run, so a page's full-depth answer
is the one its full-depth pass would store).

What `bench.pressure` puts beside `audit loss`'s estimate, so that a reader can tell an
estimate over the budget by sampling noise from a policy that really loses more."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any


def early_answers(sessions: Any) -> list[tuple[str, str, str, str | None]]:
    """(artifact ref, early label, policy version, stored full-depth label or None) of every
    stored early answer."""
    from sqlalchemy import and_, select
    from sqlalchemy.orm import aliased

    from db.models import Page, Prediction
    from db.session import session_scope
    from db.states import Pass

    full = aliased(Prediction)
    on = and_(full.page_id == Prediction.page_id, full.model_version == Prediction.model_version,
              full.pass_name == Pass.FULL.value)
    query = (select(Page.artifact_ref, Prediction.label, Prediction.policy_version, full.label)
             .join(Page, Page.id == Prediction.page_id).outerjoin(full, on)
             .where(Prediction.pass_name == Pass.EARLY.value, Page.artifact_ref.is_not(None))
             .order_by(Prediction.page_id))
    with session_scope(sessions) as s:
        return [(str(ref), str(label), str(version or ""), stored)
                for ref, label, version, stored in s.execute(query)]


def true_loss(sessions: Any, model_dir: Path, artifact_url: str,
              batch_size: int = 16) -> dict[str, Any]:
    """The share of early answers that differ from full depth, over all of them and per
    policy version (pressure or normal), as LossEstimate dicts whose interval is the
    degenerate one: nothing is sampled. `stored_full_agree`: of the pages whose full-depth pass
    the workers stored, how many got the same label here (all, when the two forwards agree)."""
    import torch

    from classifier.bundle import load_bundle
    from classifier.predict import predict_pages
    from db.audit_loss import LossEstimate
    from pipelines.artifacts import decode_page, open_artifact_store

    answers = early_answers(sessions)
    model = load_bundle(model_dir)
    store = open_artifact_store(artifact_url)
    folded: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    stored_full = [0, 0]
    with torch.inference_mode():
        for start in range(0, len(answers), 64):
            part = answers[start : start + 64]
            pages = [decode_page(store.get(ref)) for ref, _, _, _ in part]
            full = predict_pages(model, pages, early_exit=False, batch_size=batch_size)
            for (_, early, version, stored), answer in zip(part, full, strict=True):
                for key in ("total", version):
                    folded[key][0] += 1
                    folded[key][1] += int(answer.label != early)
                if stored is not None:
                    stored_full[0] += 1
                    stored_full[1] += int(answer.label == stored)

    def exact(pages: int, differ: int) -> dict[str, Any]:
        share = differ / pages if pages else None
        return LossEstimate(pages, differ, share, share, share).as_dict()

    total = folded.pop("total", [0, 0])
    return {"total": exact(*total),
            "stored_full_agree": {"pages": stored_full[0], "same_label": stored_full[1]},
            "by_version": [{"version": v, **exact(*folded[v])} for v in sorted(folded)]}
