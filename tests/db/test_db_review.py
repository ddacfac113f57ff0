"""The review queue (db/review.py) on SQLite and PostgreSQL: which pages are listed and in which
order, the page after a given one (keyset, wrapping round), counts, and hostile strings kept as
they are (bound parameters)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from db import repository as repo
from db import review
from db.models import Prediction
from db.session import session_scope

HOSTILE = "inv'oice\"; DROP TABLE human_labels; --<script>"
HOSTILE_URI = "s3://bucket/o'hara; DROP TABLE documents; --/<b>ünï</b>.pdf"


def _page(s, uri: str, number: int = 1) -> int:
    doc_id, _ = repo.register_document(s, uri, sha256=None, etag=uri[-32:])
    (pid,) = repo.upsert_pages(s, doc_id, [repo.PageRecord(number, "text_layer", 3, None, 1, 1)])
    return pid


def _rows(pid, early, full=None, **how):
    """The page's early row (label, confidence) and, when given, its full-depth row (a label,
    at 0.9, or label and confidence); `how`: version (m1), audit (False), reason (None)."""
    version, audit, reason = how.get("version", "m1"), how.get("audit", False), how.get("reason")
    (label, conf) = early
    rows = [repo.PredictionRecord(pid, version, "early", label, conf, 1, 2, [conf],
                                  1.0, None, reason, audit)]
    if full is not None:
        full_label, full_conf = full if isinstance(full, tuple) else (full, 0.9)
        rows.append(repo.PredictionRecord(pid, version, "full", full_label, full_conf, 3, 6,
                                          [full_conf], 2.0, None, reason or "manual", audit,
                                          [(full_label, full_conf)]))
    return rows


def test_the_queue_lists_disagreements_then_the_least_confident(factory) -> None:
    with session_scope(factory) as s:
        pages = {name: _page(s, f"file:///in/{name}.pdf") for name in (
            "agree_sure", "sure_early", "differ_audit", "differ_low", "low_early", "low_full",
            "labelled", "old_version")}
        pages["hostile"] = _page(s, HOSTILE_URI)
        rows = [
            *_rows(pages["agree_sure"], ("memo", 0.9), "memo", audit=True,
                   reason="audit_sample"),
            *_rows(pages["sure_early"], ("memo", 0.99)),
            *_rows(pages["differ_audit"], ("memo", 0.95), ("letter", 0.97), audit=True,
                   reason="audit_sample"),
            *_rows(pages["differ_low"], ("form", 0.3), ("email", 0.8), reason="low_confidence"),
            *_rows(pages["low_early"], ("form", 0.41), reason="low_confidence"),
            *_rows(pages["low_full"], ("email", 0.4), ("email", 0.55), reason="low_confidence"),
            *_rows(pages["labelled"], ("memo", 0.2)),
            # An old version disagreed; the newest answers surely: not listed.
            *_rows(pages["old_version"], ("memo", 0.9), "letter", version="m0"),
            *_rows(pages["old_version"], ("letter", 0.98), version="m1"),
            *_rows(pages["hostile"], (HOSTILE, 0.5), ("memo", 0.58), audit=True,
                   reason="low_confidence"),
        ]
        repo.record_predictions(s, rows)
        # Versions are ordered by when they answered: m0 answered a day earlier.
        s.execute(update(Prediction).where(Prediction.model_version == "m0")
                  .values(created_at=datetime.now(UTC) - timedelta(days=1)))
        repo.add_human_label(s, pages["labelled"], "memo", "someone")

    with session_scope(factory) as s:
        listed = review.queue(s, 0.6, limit=None)
        assert [(i.page_id, i.kind) for i in listed] == [
            (pages["hostile"], "disagreement"),  # final 0.58
            (pages["differ_low"], "disagreement"),  # final 0.8
            (pages["differ_audit"], "disagreement"),  # final 0.97
            (pages["low_early"], "low_confidence"),  # 0.41
            (pages["low_full"], "low_confidence"),  # 0.55
        ]
        hostile = listed[0]
        assert hostile.source_uri == HOSTILE_URI
        assert (hostile.early_label, hostile.full_label, hostile.suggested) == (
            HOSTILE, "memo", "memo")
        assert hostile.audit_sample and hostile.full_depth_reason == "low_confidence"
        assert (hostile.early_confidence, hostile.full_confidence) == (0.5, 0.58)
        low_early = listed[3]
        assert (low_early.full_label, low_early.full_confidence, low_early.suggested) == (
            None, None, "form")
        assert low_early.early_exit_stage == 1 and not low_early.audit_sample
        assert review.queue_counts(s, 0.6) == {"disagreement": 3, "low_confidence": 2}
        # A lower bar lists fewer pages; disagreements stay whatever their confidence.
        assert [i.page_id for i in review.queue(s, 0.5, limit=None)] == [
            pages["hostile"], pages["differ_low"], pages["differ_audit"], pages["low_early"]]
        assert [i.page_id for i in review.queue(s, 0.6, limit=2)] == [
            pages["hostile"], pages["differ_low"]]

        # The next page: after each one in order, then round to the first again.
        assert review.next_item(s, 0.6).page_id == pages["hostile"]
        ids = [i.page_id for i in listed]
        for here, there in itertools.pairwise(ids):
            assert review.next_item(s, 0.6, here).page_id == there
        assert review.next_item(s, 0.6, ids[-1]).page_id == ids[0]
        # A page outside the queue (labelled, confident) is still shown on its own.
        labelled = review.item(s, pages["labelled"], 0.6)
        assert labelled is not None and labelled.kind == "low_confidence"
        assert review.item(s, pages["sure_early"], 0.6).kind is None
        assert review.item(s, 10_000, 0.6) is None
        found = review.latest_human_label(s, pages["labelled"])
        assert (found.label, found.who) == ("memo", "someone")
        assert found.created_at.tzinfo is not None
        assert review.latest_human_label(s, pages["hostile"]) is None
        assert review.labels_seen(s) == sorted({HOSTILE, "memo", "letter", "form", "email"})

    # Labelling a page takes it out; the page after it is the one that followed it.
    with session_scope(factory) as s:
        repo.add_human_label(s, pages["differ_low"], HOSTILE, "reviewer")
    with session_scope(factory) as s:
        assert review.latest_human_label(s, pages["differ_low"]).label == HOSTILE
        assert review.next_item(s, 0.6, pages["differ_low"]).page_id == pages["differ_audit"]
        assert review.queue_counts(s, 0.6) == {"disagreement": 2, "low_confidence": 2}
        for pid in (pages["hostile"], pages["differ_audit"], pages["low_early"],
                    pages["low_full"]):
            repo.add_human_label(s, pid, "memo", "reviewer")
        assert review.queue(s, 0.6) == []
        assert review.next_item(s, 0.6, pages["low_full"]) is None
        assert review.queue_counts(s, 0.6) == {"disagreement": 0, "low_confidence": 0}
