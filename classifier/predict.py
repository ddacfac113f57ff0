"""Prediction through the one early-exit engine, the stage batcher (classifier/stage_batcher.py):
pages are batched per exit stage, and a page that exits is never computed further. Full depth is
the same batcher with `early_exit=False` (no intermediate heads). Written once here and used by
`predict_pages`, evaluation and the workers' classify runtime: the bundle's exit policy as the
batcher's decider (`make_decider`: confidence, trail, exit or not), a batcher answering with the
model's names (`page_batcher`) and the way through it (`run_rows`). Answers are
`PagePrediction`s (defined beside the batcher, which makes them).

`ClassifyRuntime` is what a serving process holds: the loaded model with its early-exit and
full-depth batchers (one per worker process, built after fork, see workers/context.py, or one
per embedded run). With the batchers' loop threads started, pages from concurrent callers share
batches; without, the caller drains the backlog itself. Metrics come in as hooks, so the
classifier never imports the worker's metrics."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

from classifier.inputs import PageLike
from classifier.live_policy import PolicyFeed, PolicyWatch
from classifier.model import EarlyExitModel
from classifier.policy import ExitPolicy, NeverExit, policy_from_json, policy_version
from classifier.stage_batcher import (
    BatcherHooks,
    Decider,
    PagePrediction,
    Schedule,
    StageBatcher,
    StageDecision,
)

# What times `evaluate`'s speed-up (reported as early_exit.engine).
ENGINE = "stage_batcher"
log = logging.getLogger(__name__)


def model_policy(model: EarlyExitModel) -> ExitPolicy:
    return policy_from_json(model.policy_spec, model.num_stages)


def make_decider(model: EarlyExitModel, policy: ExitPolicy | None = None) -> Decider:
    """The exit policy (default: the bundle's, from exits.json) as the batcher's decider:
    calibrated probabilities at this exit, with the page's earlier ones for policies that look
    back (patience)."""
    if policy is None:
        policy = model_policy(model)

    def decide(stage: int, logits: torch.Tensor, past: torch.Tensor | None) -> StageDecision:
        probs = model.calibrated_probs(stage, logits).float().cpu()
        conf, label = probs.max(dim=-1)
        trail = probs.unsqueeze(1) if past is None else torch.cat([past, probs.unsqueeze(1)], 1)
        exits = policy.decide(stage, trail).bool().cpu()
        return StageDecision(confidence=conf, label=label, exit=exits, probs=probs)

    return decide


def split_rows(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """An encoded batch as one-page rows (what `StageBatcher.submit` takes)."""
    n = next(iter(batch.values())).shape[0]
    return [{k: v[i : i + 1] for k, v in batch.items()} for i in range(n)]


def encode_rows(
    model: EarlyExitModel, pages: Sequence[PageLike], chunk: int = 16
) -> list[dict[str, torch.Tensor]]:
    """Encode pages `chunk` at a time (bounded tokeniser/pixel memory) into one-page rows."""
    rows: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(pages), max(1, chunk)):
        rows.extend(split_rows(model.encode(list(pages[start : start + chunk]))))
    return rows


def page_batcher(
    model: EarlyExitModel,
    *,
    early_exit: bool = True,
    policy: ExitPolicy | None = None,
    every_exit: bool = False,
    **options: Any,
) -> StageBatcher:
    """A stage batcher deciding with `policy` (default: the bundle's). A `NeverExit` policy is
    full depth, like `early_exit=False`: no intermediate heads are computed. `every_exit`: full
    depth that still runs every exit head on the way, so each answer's `trail` and
    `trail_labels` hold every exit's confidence and label (what the audit sample stores for
    replaying thresholds). `options` go to `StageBatcher` (max_batch, max_delay_ms, schedule,
    hooks)."""
    if every_exit:
        policy, early_exit = NeverExit(model.num_stages), True
    policy = policy or model_policy(model)
    if isinstance(policy, NeverExit) and not every_exit:
        early_exit = False
    return StageBatcher(
        model,
        make_decider(model, policy),
        early_exit=early_exit,
        label_names=model.label_names,
        exit_layers=model.exit_layers,
        **options,
    )


def run_rows(
    batcher: StageBatcher, rows: Sequence[dict[str, torch.Tensor]]
) -> list[PagePrediction]:
    """Encoded one-page rows through `batcher`, answers in row order. A batcher whose loop
    thread runs batches them with other callers' pages; otherwise this thread drains it."""
    futures: list[Future] = batcher.submit(rows, list(range(len(rows))))
    if not batcher.threaded:
        batcher.drain()
    return [f.result() for f in futures]


def predict_pages(
    model: EarlyExitModel,
    pages: Sequence[PageLike],
    *,
    early_exit: bool = True,
    batch_size: int = 16,
    policy: ExitPolicy | None = None,
) -> list[PagePrediction]:
    """Pages through the stage batcher (max_batch = batch_size), answers in page order."""
    model.eval()
    return predict_rows(
        model,
        encode_rows(model, pages, batch_size),
        early_exit=early_exit,
        batch_size=batch_size,
        policy=policy,
    )


def predict_rows(
    model: EarlyExitModel,
    rows: Sequence[dict[str, torch.Tensor]],
    *,
    early_exit: bool = True,
    batch_size: int = 16,
    policy: ExitPolicy | None = None,
) -> list[PagePrediction]:
    """Encoded one-page rows through a fresh stage batcher, drained here, answers in row order."""
    batcher = page_batcher(model, early_exit=early_exit, policy=policy, max_batch=batch_size)
    return run_rows(batcher, rows)


@dataclass(frozen=True)
class PressureMode:
    """When a runtime is under backlog pressure (`active()`: workers/pressure.py's gauge,
    cheap, cached) and the cheaper exit policy it then decides with: `load()` gives it and its
    version (`policy_version(..., pressure=True)`, ending `+pressure`), or None when there is
    none. Called once, at the first classify under pressure, never while the runtime is built
    (a worker builds it under workers.context's lock, and a derived policy reads the store)."""

    active: Callable[[], bool]
    load: Callable[[], tuple[ExitPolicy, str] | None]

    @classmethod
    def of(cls, policy: ExitPolicy, version: str, active: Callable[[], bool]) -> PressureMode:
        return cls(active, lambda: (policy, version))


@dataclass(frozen=True)
class BatcherOptions:
    max_batch: int = 16
    max_delay_ms: float = 20.0
    schedule: Schedule = "deepest_full"


class ClassifyRuntime:
    """The model and its two batchers: `classify(pages, early_exit=...)` encodes the pages,
    feeds them to the early-exit batcher (or the full-depth one) and waits for every answer.
    `hooks(name)` gives each batcher ("early", "full") its batch/queue-depth hooks. `policies`:
    where a newer exit policy for the model version may come from (the store, polled before an
    early classify; classifier/live_policy.py); each early answer names the policy version that
    let it exit (`decided_by`). `pressure`: the cheaper policy taken while its gauge says the
    workers are under backlog pressure (checked before each early classify), and the normal
    one (the bundle's or the store's) again once it says not."""

    def __init__(self, model: Any, options: BatcherOptions = BatcherOptions(), *,
                 hooks: Callable[[str], BatcherHooks] | None = None,
                 policies: PolicyFeed | None = None,
                 pressure: PressureMode | None = None) -> None:
        self.model = model
        self.options = options
        common = dict(max_batch=options.max_batch, max_delay_ms=options.max_delay_ms,
                      schedule=options.schedule)
        self.early = page_batcher(model, early_exit=True,
                                  hooks=hooks("early") if hooks else None, **common)
        # Full depth through every exit head: each answer carries every exit's label and
        # confidence (stored for the audit sample: what each exit would have answered).
        self.full = page_batcher(model, every_exit=True,
                                 hooks=hooks("full") if hooks else None, **common)
        # The normal policy's version (the OCR-free exit's answers record it: pressure does
        # not change that exit); `decider_version` is the one deciding early exits now.
        self.policy_version = policy_version(self.version, model.policy_spec)
        self._normal: tuple[ExitPolicy, str] = (model_policy(model), self.policy_version)
        self.pressure = pressure
        self.under_pressure = False
        self._pressure_policy: tuple[ExitPolicy, str] | None = None
        self._pressure_loaded = False
        self._swap = threading.Lock()
        self.early.set_decider(self.early.decide, early_exit=self.early.early_exit,
                               name=self.policy_version)
        self._watch = (PolicyWatch(policies, model, self.policy_version, self.use_policy)
                       if policies is not None else None)

    def use_policy(self, policy: ExitPolicy, version: str) -> None:
        """Decide early exits with `policy` from the next batch on (pages in flight included:
        their remaining exits decide under it, and they record `version`); under pressure it
        takes over once the pressure ends."""
        with self._swap:
            self._normal = (policy, version)
            self.policy_version = version
            if not self.under_pressure:
                self._decide_with(policy, version)

    def _decide_with(self, policy: ExitPolicy, version: str) -> None:
        self.early.set_decider(make_decider(self.model, policy),
                               early_exit=not isinstance(policy, NeverExit), name=version)

    @property
    def decider_version(self) -> str:
        """The version of the policy deciding early exits now (pressure or normal)."""
        return str(self.early.decider_name or self.policy_version)

    def refresh_policy(self) -> bool:
        """Poll the policy feed now if due (classify does it); True when the policy changed."""
        return self._watch.poll() if self._watch is not None else False

    def refresh_pressure(self) -> bool:
        """Ask the pressure gauge; swap to the pressure policy or back when its answer changed
        (True then)."""
        if self.pressure is None:
            return False
        now = bool(self.pressure.active())
        with self._swap:
            if now == self.under_pressure:
                return False
            self.under_pressure = now
            if now and not self._pressure_loaded:
                try:
                    self._pressure_policy = self.pressure.load()
                except Exception as exc:  # the store down: serve on, try at the next classify
                    log.warning("cannot load the pressure exit policy (%s: %s); keeping %s",
                                type(exc).__name__, " ".join(str(exc).split())[:300],
                                self._normal[1])
                    self.under_pressure = False
                    return False
                self._pressure_loaded = True
            chosen = self._pressure_policy if now else self._normal
            if chosen is None:  # no pressure policy to be had: the normal one decides on
                log.info("backlog pressure on: no pressure policy, exit policy %s",
                         self._normal[1])
                return False
            self._decide_with(*chosen)
        log.info("backlog pressure %s: exit policy %s", "on" if now else "off", chosen[1])
        return True

    @property
    def version(self) -> str:
        return str(self.model.version)

    @property
    def threaded(self) -> bool:
        return self.early.threaded

    def start(self) -> ClassifyRuntime:
        """Run the batchers' loop threads (a worker process fed by concurrent tasks)."""
        self.early.start()
        self.full.start()
        return self

    def stop(self, finish: bool = True) -> list[Any]:
        return self.early.stop(finish=finish) + self.full.stop(finish=finish)

    def classify(self, pages: Sequence[Any], *, early_exit: bool = True) -> list[PagePrediction]:
        if not pages:
            return []
        # Encode in chunks of max_batch: tokenising is the caller's CPU work, not the batcher's.
        if early_exit:
            self.refresh_policy()
            self.refresh_pressure()
        rows = encode_rows(self.model, pages, self.options.max_batch)
        return run_rows(self.early if early_exit else self.full, rows)

    def stats(self) -> dict[str, list[dict[str, float]]]:
        return {"early": self.early.stats_dict(), "full": self.full.stats_dict()}
