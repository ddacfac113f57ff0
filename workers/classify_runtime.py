"""A loaded model plus its stage batchers: what the classify steps call.

One per worker process (built after fork, see workers/model_holder.py) or per embedded run.
`classify(pages, early_exit=...)` encodes the pages, feeds them to the early-exit batcher (or
the full-depth one) and waits for every page's answer. With the batchers' loop threads started,
pages from concurrent callers share batches; without, the caller drains the backlog itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from workers.stage_batcher import Schedule, StageBatcher, StageDecision


@dataclass(frozen=True)
class BatcherOptions:
    max_batch: int = 16
    max_delay_ms: float = 20.0
    schedule: Schedule = "deepest_full"


@dataclass(frozen=True)
class PageAnswer:
    label: str
    confidence: float
    exit_stage: int
    exit_layer: int
    trail: tuple[float, ...]
    latency_ms: float


def make_decider(model: Any, policy: Any | None = None) -> Any:
    """The bundle's exit policy (classifier.policy, from exits.json) as the batcher's decider:
    calibrated probabilities at this exit, with the page's earlier ones for policies that look
    back (patience)."""
    if policy is None:
        from classifier.predict import model_policy

        policy = model_policy(model)

    def decide(stage: int, logits: torch.Tensor, past: torch.Tensor | None) -> StageDecision:
        probs = model.calibrated_probs(stage, logits).float().cpu()
        conf, label = probs.max(dim=-1)
        trail = probs.unsqueeze(1) if past is None else torch.cat([past, probs.unsqueeze(1)], 1)
        exits = policy.decide(stage, trail).bool().cpu()
        return StageDecision(confidence=conf, label=label, exit=exits, probs=probs)

    return decide


def split_rows(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    n = next(iter(batch.values())).shape[0]
    return [{k: v[i : i + 1] for k, v in batch.items()} for i in range(n)]


class ClassifyRuntime:
    def __init__(self, model: Any, options: BatcherOptions = BatcherOptions()) -> None:
        self.model = model
        self.options = options
        decide = make_decider(model)
        common = dict(
            max_batch=options.max_batch,
            max_delay_ms=options.max_delay_ms,
            schedule=options.schedule,
        )
        self.early = StageBatcher(model, decide, early_exit=True, **common)
        self.full = StageBatcher(model, decide, early_exit=False, **common)
        self.threaded = False

    @property
    def version(self) -> str:
        return str(self.model.version)

    def start(self) -> ClassifyRuntime:
        """Run the batchers' loop threads (a worker process fed by concurrent tasks)."""
        self.early.start()
        self.full.start()
        self.threaded = True
        return self

    def stop(self, finish: bool = True) -> list[Any]:
        returned = self.early.stop(finish=finish) + self.full.stop(finish=finish)
        self.threaded = False
        return returned

    def classify(self, pages: Sequence[Any], *, early_exit: bool = True) -> list[PageAnswer]:
        if not pages:
            return []
        batcher = self.early if early_exit else self.full
        # Encode in chunks of max_batch: tokenising is the caller's CPU work, not the batcher's.
        rows: list[dict[str, torch.Tensor]] = []
        step = self.options.max_batch
        for start in range(0, len(pages), step):
            rows.extend(split_rows(self.model.encode(list(pages[start : start + step]))))
        futures = batcher.submit(rows, list(range(len(rows))))
        if not self.threaded:
            batcher.drain()
        names = self.model.label_names
        layers = self.model.exit_layers
        out = []
        for fut in futures:
            r = fut.result()
            out.append(
                PageAnswer(
                    label=names[r.label],
                    confidence=r.confidence,
                    exit_stage=r.exit_stage,
                    exit_layer=int(layers[r.exit_stage]),
                    trail=r.trail,
                    latency_ms=r.latency_ms,
                )
            )
        return out

    def stats(self) -> dict[str, list[dict[str, float]]]:
        return {"early": self.early.stats_dict(), "full": self.full.stats_dict()}
