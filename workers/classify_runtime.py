"""A loaded model plus its stage batchers: what the classify steps call.

One per worker process (built after fork, see workers/context.py) or per embedded run.
`classify(pages, early_exit=...)` encodes the pages, feeds them to the early-exit batcher (or
the full-depth one) and waits for every page's answer. With the batchers' loop threads started,
pages from concurrent callers share batches; without, the caller drains the backlog itself.
The engine, its exit decisions and the page's answer are classifier's
(classifier/stage_batcher.py, classifier/predict.py: the engine `predict_pages` and `evaluate`
run); this module adds what is about serving: loop threads and the worker's metrics hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from classifier.policy import policy_version
from classifier.predict import encode_rows, page_batcher, run_rows
from classifier.stage_batcher import PagePrediction, Schedule
from workers.metrics import BatcherMetrics


@dataclass(frozen=True)
class BatcherOptions:
    max_batch: int = 16
    max_delay_ms: float = 20.0
    schedule: Schedule = "deepest_full"


class ClassifyRuntime:
    def __init__(self, model: Any, options: BatcherOptions = BatcherOptions()) -> None:
        self.model = model
        self.options = options
        common = dict(
            max_batch=options.max_batch,
            max_delay_ms=options.max_delay_ms,
            schedule=options.schedule,
        )
        # The bundle's policy decides; batch fill and queue depths go to the worker's metrics.
        self.early = page_batcher(model, early_exit=True, hooks=BatcherMetrics("early"), **common)
        # Full depth through every exit head: each answer carries every exit's label and
        # confidence (stored for the audit sample: what each exit would have answered).
        self.full = page_batcher(model, every_exit=True, hooks=BatcherMetrics("full"), **common)
        self.policy_version = policy_version(self.version, model.policy_spec)

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
        rows = encode_rows(self.model, pages, self.options.max_batch)
        return run_rows(self.early if early_exit else self.full, rows)

    def stats(self) -> dict[str, list[dict[str, float]]]:
        return {"early": self.early.stats_dict(), "full": self.full.stats_dict()}
