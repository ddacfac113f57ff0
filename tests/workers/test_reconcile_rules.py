"""The reconciler's stuck rules (workers.steps.StuckRules) with an injected clock and queue
depth, on SQLite and PostgreSQL: a lost message is noticed in seconds, healthy work (waiting in
a busy queue, a long ingest that heartbeats, a running batch) is never handed out twice."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from servicekit import migrated_pg_database
from sqlalchemy import select, update

from db import repository as repo
from db.models import Document, Page, utcnow
from db.session import make_engine, migrate, session_factory, session_scope
from db.states import DocumentState, PageState
from pipelines.artifacts import LocalArtifactStore, encode_page, page_key
from pipelines.page_content import Page as PageContent
from workers import steps
from workers.steps import StepContext, StuckRules

RULES = StuckRules()  # the shipped bounds: 900 / 30 / 90 / 30 s, factor 4
EMPTY = {"ingest": 0, "classify": 0, "full_depth": 0}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StepContext]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
        migrate(engine)
        yield StepContext(session_factory(engine), LocalArtifactStore(tmp_path / "art"))
        engine.dispose()
        return
    with migrated_pg_database("doctriage_reconcile") as url:
        engine = make_engine(url)
        yield StepContext(session_factory(engine), LocalArtifactStore(tmp_path / "art"))
        engine.dispose()


def _depth(depths: dict[str, int | None]):
    return lambda queue: depths[queue]


def _document(ctx: StepContext, name: str, state: DocumentState, pages: int = 0,
              page_state: PageState = PageState.PENDING) -> tuple[int, list[int]]:
    with session_scope(ctx.sessions) as s:
        doc_id, _ = repo.register_document(s, f"file:///{name}.pdf", sha256=name)
        recs = [repo.PageRecord(n, "text_layer", 3, page_key(doc_id, n), 10, 10)
                for n in range(1, pages + 1)]
        page_ids = repo.upsert_pages(s, doc_id, recs)
        repo.mark_document(s, doc_id, state)
        repo.mark_pages(s, page_ids, page_state)
    return doc_id, page_ids


def _updated(ctx: StepContext, model: type, row_id: int) -> datetime:
    with session_scope(ctx.sessions) as s:
        return s.get(model, row_id).updated_at


def _later(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def test_lost_messages_come_back_in_seconds_when_their_queue_is_empty(ctx) -> None:
    waiting, _ = _document(ctx, "waiting", DocumentState.RECEIVED)
    _, pending = _document(ctx, "pending", DocumentState.INGESTED, 3)
    _, rerouted = _document(ctx, "rerouted", DocumentState.INGESTED, 2, PageState.REROUTED)
    assert steps.reconcile(ctx, RULES, now=_later(20), depth=_depth(EMPTY)) == \
        steps.ReconcilePlan([], [], [], [])  # younger than lost_after_s (30 s): left alone
    plan = steps.reconcile(ctx, RULES, now=_later(35), depth=_depth(EMPTY))
    assert plan.documents == [waiting]
    assert plan.classify == pending and plan.full_depth == rerouted
    # Taken back = touched: the next sweeps leave them alone while the new messages wait.
    again = steps.reconcile(ctx, RULES, now=_later(45), depth=_depth(EMPTY))
    assert (again.documents, again.classify, again.full_depth) == ([], [], [])


def test_healthy_work_waiting_in_a_busy_queue_is_not_reenqueued(ctx) -> None:
    """Messages still queued may be theirs: the long bound (stuck_after_s) applies, and an
    unreadable depth counts as busy."""
    waiting, _ = _document(ctx, "waiting", DocumentState.RECEIVED)
    _, pending = _document(ctx, "pending", DocumentState.INGESTED, 3)
    _, rerouted = _document(ctx, "rerouted", DocumentState.INGESTED, 2, PageState.REROUTED)
    before = _updated(ctx, Document, waiting)
    for depths in ({"ingest": 40, "classify": 7, "full_depth": 2},
                   {"ingest": None, "classify": None, "full_depth": None}):
        plan = steps.reconcile(ctx, RULES, now=_later(600), depth=_depth(depths))
        assert (plan.documents, plan.classify, plan.full_depth) == ([], [], [])
    assert _updated(ctx, Document, waiting) == before  # not even touched
    plan = steps.reconcile(ctx, RULES, now=_later(901), depth=_depth({"ingest": 40,
                           "classify": 7, "full_depth": 2}))
    assert plan.documents == [waiting]
    assert plan.classify == pending and plan.full_depth == rerouted


def test_pages_being_classified_get_a_bound_from_measured_step_time(ctx) -> None:
    """CLASSIFYING pages were claimed by a batch: back to PENDING after
    max(classify_after_s, 4 x p99 page latency). Measured 20 s p99 -> 80 s."""
    _, claimed = _document(ctx, "claimed", DocumentState.INGESTED, 2,
                           PageState.CLASSIFYING)
    plan = steps.reconcile(ctx, RULES, now=_later(31), depth=_depth(EMPTY))
    assert plan.classify == claimed  # nothing measured yet: the 30 s floor
    _, done = _document(ctx, "measured", DocumentState.INGESTED, 100, PageState.DONE)
    with session_scope(ctx.sessions) as s:
        repo.mark_pages(s, claimed, PageState.CLASSIFYING)
        repo.record_predictions(s, [
            repo.PredictionRecord(pid, "v1", "early", "form", 0.9, 0, 0, [0.9],
                                  20_000.0 if i >= 95 else 500.0)
            for i, pid in enumerate(done)])
    assert steps.reconcile(ctx, RULES, now=_later(60), depth=_depth(EMPTY)).classify == []
    plan = steps.reconcile(ctx, RULES, now=_later(85), depth=_depth(EMPTY))
    assert plan.classify == claimed
    with session_scope(ctx.sessions) as s:
        assert {s.get(Page, i).state for i in claimed} == {PageState.PENDING.value}


def test_pending_pages_of_a_document_being_ingested_wait_for_its_ingest(ctx) -> None:
    """The ingest step enqueues its pages when it ends; the reconciler must not send them
    early (they have no message yet: that is not a lost one)."""
    doc_id, _ = _document(ctx, "long", DocumentState.INGESTING, 4)
    plan = steps.reconcile(ctx, RULES, now=_later(60), depth=_depth(EMPTY))
    assert (plan.documents, plan.classify) == ([], [])
    plan = steps.reconcile(ctx, RULES, now=_later(95), depth=_depth(EMPTY))
    assert plan.documents == [doc_id] and plan.classify == []  # its re-ingest sends them


@dataclass
class _Page:
    number: int
    words: list[str] = field(default_factory=lambda: ["total"])
    boxes: list[tuple[int, int, int, int]] = field(default_factory=lambda: [(0, 0, 9, 9)])
    width: int = 10
    height: int = 10
    text_source: str = "text_layer"
    ms: float = 1.0
    image: Any = field(default_factory=lambda: Image.new("RGB", (10, 10), "white"))


def _long_ingest(ctx: StepContext, heartbeat_s: float) -> tuple[steps.ReconcilePlan, str]:
    """An ingest whose every page takes 'an hour': before each page the document's updated_at
    is set an hour back (the time it would have been without heartbeats); after the second
    page a reconcile sweep runs. Returns that sweep and the document's final state."""
    doc_id, _ = _document(ctx, "long-ingest", DocumentState.RECEIVED)
    seen: list[steps.ReconcilePlan] = []

    def pages(stream: Any, name: str, options: Any) -> Iterator[_Page]:
        for n in (1, 2, 3):
            if n == 3:
                seen.append(steps.reconcile(ctx, RULES, depth=_depth(EMPTY)))
            with session_scope(ctx.sessions) as s:
                s.execute(update(Document).where(Document.id == doc_id)
                          .values(updated_at=utcnow() - timedelta(hours=1)))
            yield _Page(n)

    ctx.iter_pages = pages
    ctx.open_uri = lambda uri, version: io.BytesIO(b"")
    ctx.heartbeat_s = heartbeat_s
    result = steps.ingest_document(ctx, doc_id)
    return seen[0], result.state


def test_a_heartbeating_long_ingest_is_not_stolen(ctx) -> None:
    plan, state = _long_ingest(ctx, heartbeat_s=0.0)
    assert plan.documents == []
    assert state == DocumentState.INGESTED.value
    with session_scope(ctx.sessions) as s:
        (attempts,) = s.execute(select(Document.attempts)).one()
    assert attempts == 1  # claimed once: nobody else ingested it


def test_a_silent_ingest_is_taken_back(ctx) -> None:
    """The control: the same ingest without heartbeats looks dead, and is handed out again."""
    plan, _ = _long_ingest(ctx, heartbeat_s=1e9)
    assert len(plan.documents) == 1


class _Runtime:
    """A classify runtime whose full-depth batch runs a reconcile sweep while it computes."""

    version = "v1"
    policy_version = "v1+ptest"

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.plans: list[steps.ReconcilePlan] = []

    def classify(self, inputs: list[Any], early_exit: bool) -> list[Any]:
        self.plans.append(steps.reconcile(self.ctx, RULES, now=_later(5), depth=_depth(EMPTY)))

        @dataclass
        class Answer:
            label: str = "form"
            confidence: float = 0.9
            exit_stage: int = 1
            exit_layer: int = 2
            trail: tuple[float, ...] = (0.9,)
            trail_labels: tuple[str, ...] = ("form",)
            latency_ms: float = 5.0
            decided_by: str | None = None

        return [Answer() for _ in inputs]


def test_a_running_full_depth_batch_is_not_handed_out_again(ctx) -> None:
    """REROUTED pages have no claim state: the batch refreshes their updated_at when it takes
    them, so a sweep meanwhile (its queue empty, the pages re-routed long ago) leaves them."""
    doc_id, pages = _document(ctx, "rerouted", DocumentState.INGESTED, 2, PageState.REROUTED)
    for n in (1, 2):
        ctx.artifacts.put(page_key(doc_id, n), encode_page(PageContent(
            number=n, width=10, height=10, text_source="text_layer", words=["a"],
            boxes=[(0, 0, 5, 5)], image=Image.new("RGB", (10, 10), "white"))))
    with session_scope(ctx.sessions) as s:
        s.execute(update(Page).values(updated_at=utcnow() - timedelta(hours=1)))
    runtime = _Runtime(ctx)
    result = steps.full_depth_pages(ctx, runtime, pages)  # type: ignore[arg-type]
    assert runtime.plans[0].full_depth == []
    assert result.done == pages
