"""The stage batcher: batches pages *by exit stage* so batches stay full while easy pages leave.

One queue per exit stage: queue 0 holds encoded pages (embeddings + the pre-encoder exit run
there); queue k > 0 holds pages whose hidden state sits at exit k-1, waiting for the layers up
to exit k. A batch is taken from ONE stage's queue (never mixing depths), up to
``max_batch`` pages, waiting at most ``max_delay_ms`` after the oldest waiting page arrived
(Triton dynamic-batcher semantics). After the layers up to that stage's exit, each page either
exits (the decider says its confidence is enough; the final stage always exits) or joins the
next stage's queue carrying its hidden state (its rows of the batch's state, copied once into the
batch that takes them: ``StageState.gather``).

Two ways to drive it:
- threaded: ``start()`` runs a loop thread; callers from any thread ``submit()`` and wait on the
  returned futures (a classify worker process feeds one batcher from concurrent tasks);
- synchronous drain: ``submit()`` a backlog, then ``drain()`` in the caller's thread runs batches
  until every queue is empty (`classifier.predict.predict_pages`, evaluation, the embedded
  runner and the benchmarks).

The one early-exit engine: serving and measuring both run it. Knows nothing of Celery, SQL or
metrics: it takes a staged model, an exit decider (`classifier.predict.make_decider`), the
names to answer with (label names, encoder layers per exit) and optional hooks (workers pass
Prometheus ones, workers/metrics.py). Every page's answer is a `PagePrediction` on its future.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

# Which stage the drain loop runs next; see `_pick_drain_stage`.
Schedule = Literal["deepest_full", "fullest", "deepest", "shallowest"]
SCHEDULES: tuple[str, ...] = ("deepest_full", "fullest", "deepest", "shallowest")


class StagedModel(Protocol):
    """What the batcher needs of a model (`classifier.model.EarlyExitModel` is the real one)."""

    num_stages: int

    def embed(self, inputs: dict[str, torch.Tensor]) -> Any:
        """Stage 0: embeddings of a batch of encoded pages."""

    def exit_logits(self, state: Any) -> torch.Tensor:
        """Logits of the exit at the state's stage (used for the pre-encoder exit)."""

    def advance(self, state: Any, stages: int = 1) -> tuple[torch.Tensor, Any]:
        """Layers from the state's exit to `stages` exits on: (logits there, new state)."""


@dataclass(frozen=True)
class StageDecision:
    """Per-sample outcome of one exit: calibrated confidence, label index, whether it exits,
    and the probabilities to remember for later exits (policies such as patience read them)."""

    confidence: torch.Tensor  # float [B]
    label: torch.Tensor  # long [B]
    exit: torch.Tensor  # bool [B]
    probs: torch.Tensor | None = None  # float [B, C], kept per page for the next decisions


# decide(stage, logits, past) -> StageDecision, where `past` is (B, stage, C): the probs each
# page had at the exits it passed (None at stage 0). The batcher forces exit at the final stage.
Decider = Callable[[int, torch.Tensor, torch.Tensor | None], StageDecision]
# Concatenates per-page encoded inputs into one batch (pads if the model needs it).
InputCollator = Callable[[Sequence[dict[str, torch.Tensor]]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class PagePrediction:
    """One page's answer, the engine's one answer type: what `predict_pages` returns, evaluation
    scores and the workers store (with the page id, pass and model version)."""

    label: str  # the label's name (its index as text for a batcher given no names)
    confidence: float  # calibrated probability of `label` at the exit taken
    exit_stage: int
    exit_layer: int  # encoder layers run for this page (0 = pre-encoder exit)
    trail: tuple[float, ...] = ()  # confidence at each exit visited, stage 0 first
    probs: tuple[float, ...] = ()  # class probabilities at the exit (empty: decider gave none)
    trail_labels: tuple[str, ...] = ()  # the label at each exit visited, beside `trail`
    # The name of the decider that let the page exit (`StageBatcher.set_decider`: the policy
    # version a serving runtime records), None when the batcher's decider has no name.
    decided_by: str | None = field(default=None, compare=False)
    # submit -> exit in the batcher, queueing included: a measurement, not part of the answer
    latency_ms: float | None = field(default=None, compare=False)


class BatcherHooks(Protocol):
    """Observers of the batcher's queues and batches (a worker's metrics); called under the
    batcher's lock, so they must be quick and must not call back into the batcher."""

    def queued(self, depths: list[int]) -> None:
        """Pages waiting per stage, right after a submission."""

    def batch_done(self, stage: int, size: int, max_batch: int, seconds: float,
                   depths: list[int]) -> None:
        """One batch run (failed or not), and the pages waiting per stage after it."""


class BatcherStopped(RuntimeError):
    """Set on the futures of pages handed back by a non-finishing `stop()`."""


@dataclass(frozen=True)
class _Rule:
    """How pages exit, swapped as one object (`set_decider`): a batch reads it once, so it
    never mixes an old decider with a new early_exit flag."""

    decide: Decider
    early_exit: bool
    name: str | None = None


@dataclass
class StageStats:
    batches: int = 0
    pages_in: int = 0
    pages_exited: int = 0
    compute_s: float = 0.0

    def mean_fill(self, max_batch: int) -> float:
        return self.pages_in / (self.batches * max_batch) if self.batches else 0.0


@dataclass
class _Item:
    key: Any
    future: Future
    submitted: float
    payload: Any  # encoded inputs of the page (stage 0 only)
    trail: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # label index at each exit visited
    past: list[torch.Tensor] = field(default_factory=list)  # probs at each exit passed


@dataclass
class _Group:
    """Pages that travel together: a submission at stage 0 (state None, inputs per item), or
    the survivors of one batch with their hidden state as ONE batch-first StageState. Keeping
    survivors together avoids a per-page select+cat copy at every stage; a group is split only
    when a batch takes part of it."""

    items: list[_Item]
    state: Any | None
    enqueued: float
    # The rows of `state` that are this group's items, in order (None: all of them). A split
    # or a batch whose other pages exited keeps the rows, not a copy: the rows are copied once,
    # into the batch that takes them (`_gather`).
    rows: list[int] | None = None


# A parked group's contribution to a batch: its state and the rows of it (None: all).
_Part = tuple[Any, list[int] | None]


def default_collate(rows: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate one-row input dicts along the batch axis (inputs share a fixed length)."""
    return {k: torch.cat([r[k] for r in rows], dim=0) for k in rows[0]}


class StageBatcher:
    def __init__(
        self,
        model: StagedModel,
        decide: Decider,
        *,
        max_batch: int = 16,
        max_delay_ms: float = 20.0,
        early_exit: bool = True,
        schedule: Schedule = "deepest_full",
        collate: InputCollator = default_collate,
        hooks: BatcherHooks | None = None,
        label_names: Sequence[str] | None = None,
        exit_layers: Sequence[int] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
        self.model = model
        # early_exit=False is the full-depth pass: embeddings, then every layer in one go, with
        # no intermediate exit heads computed (only the final one).
        self._rule = _Rule(decide, early_exit)
        self.max_batch = max_batch
        self.max_delay_s = max_delay_ms / 1000.0
        self.schedule = schedule
        self.num_stages = int(model.num_stages)
        self._collate = collate
        self._queues: list[deque[_Group]] = [deque() for _ in range(self.num_stages)]
        self._sizes = [0] * self.num_stages  # pages waiting per stage
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.stats = [StageStats() for _ in range(self.num_stages)]
        # Every batch run, in order, as (stage, size): tests check no batch mixes stages.
        self.batch_log: list[tuple[int, int]] = []
        # Most pages ever parked with a hidden state (stages > 0): the batcher's memory high-water.
        self.peak_parked = 0
        self._hooks = hooks
        # What answers are named with: the model's label names and encoder layers per exit.
        self._label_names = list(label_names) if label_names is not None else None
        self._exit_layers = list(exit_layers) if exit_layers is not None else None

    @property
    def decide(self) -> Decider:
        return self._rule.decide

    @property
    def early_exit(self) -> bool:
        return self._rule.early_exit

    @property
    def decider_name(self) -> str | None:
        return self._rule.name

    def set_decider(self, decide: Decider, *, early_exit: bool = True,
                    name: str | None = None) -> None:
        """Swap how pages exit, from any thread, between batches: a batch already running
        finishes under the rule it started with, every later batch (pages parked mid-way
        included) decides with the new one. `name` goes on each answer (`decided_by`)."""
        rule = _Rule(decide, early_exit, name)
        with self._cond:  # one reference assignment; the lock orders it with _take
            self._rule = rule

    # -- feeding ---------------------------------------------------------------------------

    def submit(
        self, inputs: Sequence[dict[str, torch.Tensor]], keys: Sequence[Any]
    ) -> list[Future]:
        """Queue pages (one encoded-input dict of batch size 1 each) at stage 0."""
        if len(inputs) != len(keys):
            raise ValueError("inputs and keys differ in length")
        now = time.perf_counter()
        items = [_Item(k, Future(), now, x) for k, x in zip(keys, inputs, strict=True)]
        with self._cond:
            if self._stopping:
                raise BatcherStopped("the batcher is stopping; not accepting pages")
            if items:
                self._queues[0].append(_Group(items, None, now))
                self._sizes[0] += len(items)
            self._cond.notify_all()
            # Under the lock, so the last depth written is the latest one.
            if self._hooks is not None:
                self._hooks.queued(list(self._sizes))
        return [it.future for it in items]

    @property
    def threaded(self) -> bool:
        """Whether a loop thread runs batches (else the caller drains)."""
        return self._thread is not None

    def pending(self) -> list[int]:
        with self._cond:
            return list(self._sizes)

    # -- synchronous drain -----------------------------------------------------------------

    def drain(self, on_batch: Callable[[int, int], None] | None = None) -> None:
        """Run batches in this thread until every stage queue is empty (no waiting)."""
        if self._thread is not None:
            raise RuntimeError("drain() is for a batcher without a running loop thread")
        while True:
            with self._cond:
                stage = self._pick_drain_stage()
                if stage is None:
                    return
                items, parts = self._take(stage)
            self._run_batch(stage, items, parts)
            if on_batch is not None:
                on_batch(stage, len(items))

    def _pick_drain_stage(self) -> int | None:
        sizes = self._sizes
        nonempty = [s for s, n in enumerate(sizes) if n]
        if not nonempty:
            return None
        if self.schedule == "deepest":
            return nonempty[-1]
        if self.schedule == "shallowest":
            return nonempty[0]
        if self.schedule == "fullest":
            return max(nonempty, key=lambda s: (sizes[s], s))
        # deepest_full: run full batches, deepest first (frees hidden states early, so a large
        # backlog never holds every page's state at once); only when no queue can fill a batch
        # (the tail of the backlog) run the shallowest partial one, whose survivors then join
        # the next queue: at most one partial batch per stage.
        full = [s for s in nonempty if sizes[s] >= self.max_batch]
        if full:
            return full[-1]
        return nonempty[0]

    # -- threaded loop ---------------------------------------------------------------------

    def start(self) -> StageBatcher:
        with self._cond:
            if self._thread is not None:
                return self
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="stage-batcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, finish: bool = True, timeout: float | None = None) -> list[Any]:
        """Stop the loop. finish=True runs every pending page to its exit first; finish=False
        hands pending pages back: their futures fail with BatcherStopped and their keys are
        returned, so the caller can re-queue them. Nothing is dropped silently."""
        returned: list[Any] = []
        with self._cond:
            self._stopping = True
            if not finish:
                for q in self._queues:
                    while q:
                        for it in q.popleft().items:
                            returned.append(it.key)
                            it.future.set_exception(
                                BatcherStopped(f"page {it.key!r} handed back")
                            )
                self._sizes = [0] * self.num_stages
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            self._thread = None
        elif finish:
            self.drain()
        return returned

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    stage, wait = self._ready_stage(time.perf_counter())
                    if stage is not None:
                        items, parts = self._take(stage)
                        break
                    if self._stopping and not any(self._sizes):
                        return
                    self._cond.wait(wait)
            self._run_batch(stage, items, parts)

    def _ready_stage(self, now: float) -> tuple[int | None, float | None]:
        """The deepest stage whose batch is ready: full, or its oldest page waited max_delay
        (or we are stopping). Otherwise None and how long until the next deadline."""
        next_deadline: float | None = None
        for s in range(self.num_stages - 1, -1, -1):
            q = self._queues[s]
            if not self._sizes[s]:
                continue
            if self._sizes[s] >= self.max_batch or self._stopping:
                return s, None
            deadline = q[0].enqueued + self.max_delay_s
            if deadline <= now:
                return s, None
            next_deadline = deadline if next_deadline is None else min(next_deadline, deadline)
        return None, (None if next_deadline is None else max(0.0, next_deadline - now))

    # -- one batch -------------------------------------------------------------------------

    def _take(self, stage: int) -> tuple[list[_Item], list[_Part]]:
        """Up to max_batch pages from the stage's queue, oldest first (caller holds the lock):
        their items and the (state, rows) of the groups (or group parts) they came in."""
        q = self._queues[stage]
        need = self.max_batch
        items: list[_Item] = []
        parts: list[_Part] = []
        while need and q:
            group = q[0]
            n = len(group.items)
            if n <= need:
                q.popleft()
                items.extend(group.items)
                if group.state is not None:
                    parts.append((group.state, group.rows))
            else:  # split: the head goes into this batch, the rest waits (its age kept)
                items.extend(group.items[:need])
                group.items = group.items[need:]
                if group.state is not None:
                    rows = group.rows if group.rows is not None else list(range(n))
                    parts.append((group.state, rows[:need]))
                    group.rows = rows[need:]
            need = self.max_batch - len(items)
        self._sizes[stage] -= len(items)
        return items, parts

    def _gather(self, parts: Sequence[_Part]) -> Any:
        """One batch state from the parts' rows. A StageState copies each row once
        (`StageState.gather`); other states (the tests' fakes) select, then concatenate."""
        if len(parts) == 1 and parts[0][1] is None:
            return parts[0][0]
        gather = getattr(type(parts[0][0]), "gather", None)
        if gather is not None:
            return gather(parts)
        states = [s if rows is None else s.select(rows) for s, rows in parts]
        return states[0] if len(states) == 1 else type(states[0]).cat(states)

    def _run_batch(self, stage: int, batch: list[_Item], parts: list[_Part]) -> None:
        t0 = time.perf_counter()
        rule = self._rule  # read once: the whole batch decides under one rule
        try:
            with torch.inference_mode():
                logits, next_state, final = self._forward(stage, batch, parts, rule.early_exit)
                past = None
                if stage > 0 and batch[0].past:
                    past = torch.stack([torch.stack(it.past) for it in batch])
                decision = rule.decide(stage, logits, past)
        except BaseException as exc:  # a failed batch fails its pages, never the loop
            for it in batch:
                it.future.set_exception(exc)
            self._record(stage, len(batch), 0, time.perf_counter() - t0)
            return
        exits = decision.exit.tolist() if (rule.early_exit and not final) else [final] * len(batch)
        exit_stage = self.num_stages - 1 if final else stage
        confs = decision.confidence.tolist()
        labels = decision.label.tolist()
        probs = decision.probs
        # One conversion per batch, not per page; only exiting pages keep theirs.
        prob_rows = probs.tolist() if probs is not None else None
        now = time.perf_counter()
        stay: list[int] = []
        for i, it in enumerate(batch):
            it.trail.append(float(confs[i]))
            it.labels.append(int(labels[i]))
            if probs is not None and not final:
                it.past.append(probs[i])
            if exits[i]:
                row = tuple(prob_rows[i]) if prob_rows is not None else ()
                answer = self._answer(int(labels[i]), exit_stage, it, row, now)
                if rule.name is not None:
                    answer = dataclasses.replace(answer, decided_by=rule.name)
                it.future.set_result(answer)
            else:
                stay.append(i)
        if stay:
            self._park_survivors(stage + 1, batch, stay, next_state, now)
        self._record(stage, len(batch), len(batch) - len(stay), now - t0)

    def _forward(
        self, stage: int, batch: list[_Item], parts: list[_Part], early_exit: bool
    ) -> tuple[torch.Tensor, Any, bool]:
        """The model's work for one batch: (logits at the exit reached, state there, final?)."""
        if stage == 0 and not early_exit:  # full depth: no exit heads on the way
            state = self.model.embed(self._collate([it.payload for it in batch]))
            logits, next_state = self.model.advance(state, stages=self.num_stages - 1)
            return logits, next_state, True
        if stage == 0:  # embeddings, then the pre-encoder exit
            next_state = self.model.embed(self._collate([it.payload for it in batch]))
            return self.model.exit_logits(next_state), next_state, self.num_stages == 1
        # the layers from the previous exit up to this one
        logits, next_state = self.model.advance(self._gather(parts))
        return logits, next_state, stage == self.num_stages - 1

    def _answer(self, label: int, exit_stage: int, item: _Item, probs: tuple[float, ...],
                now: float) -> PagePrediction:
        """The page's answer at `exit_stage`: its confidence is the last one on its trail."""
        names, layers = self._label_names, self._exit_layers

        def name(index: int) -> str:
            return names[index] if names is not None else str(index)

        return PagePrediction(
            label=name(label),
            confidence=item.trail[-1],
            exit_stage=exit_stage,
            exit_layer=int(layers[exit_stage]) if layers is not None else exit_stage,
            trail=tuple(item.trail),
            probs=probs,
            trail_labels=tuple(name(i) for i in item.labels),
            latency_ms=(now - item.submitted) * 1000.0,
        )

    def _park_survivors(self, stage: int, batch: list[_Item], stay: list[int], state: Any,
                        now: float) -> None:
        """The batch's pages at `stay` wait at `stage`: all of them with the batch's state; most
        of them with their rows of it (copied once, when a batch takes them); a few with a
        copy made now, so the exited pages' states are freed."""
        if len(stay) == len(batch):
            self._park(stage, batch, state, None, now)
        elif 2 * len(stay) >= len(batch):
            self._park(stage, [batch[i] for i in stay], state, stay, now)
        else:
            self._park(stage, [batch[i] for i in stay], state.select(stay), None, now)

    def _park(self, stage: int, items: list[_Item], state: Any, rows: list[int] | None,
              now: float) -> None:
        """Pages that did not exit wait at `stage` with their hidden state."""
        for it in items:
            it.payload = None  # inputs are not needed past the embeddings
        with self._cond:
            self._queues[stage].append(_Group(items, state, now, rows))
            self._sizes[stage] += len(items)
            self.peak_parked = max(self.peak_parked, sum(self._sizes[1:]))
            self._cond.notify_all()

    def _record(self, stage: int, size: int, exited: int, seconds: float) -> None:
        with self._cond:
            st = self.stats[stage]
            st.batches += 1
            st.pages_in += size
            st.pages_exited += exited
            st.compute_s += seconds
            self.batch_log.append((stage, size))
            if self._hooks is not None:
                self._hooks.batch_done(stage, size, self.max_batch, seconds, list(self._sizes))

    def stats_dict(self) -> list[dict[str, float]]:
        with self._cond:
            return [
                {
                    "stage": s,
                    "batches": st.batches,
                    "pages_in": st.pages_in,
                    "pages_exited": st.pages_exited,
                    "mean_fill": round(st.mean_fill(self.max_batch), 4),
                    "compute_s": round(st.compute_s, 4),
                }
                for s, st in enumerate(self.stats)
            ]
