"""A deterministic model implementing the staged API, for batcher tests.

Each page's input is [page_id, exit_at]; it exits at stage `exit_at` (or the final stage).
Each row carries its stage, and `advance` refuses a batch that mixes stages, so a test fails
if the batcher ever mixes depths.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from classifier.stage_batcher import StageDecision


@dataclass
class FakeState:
    x: torch.Tensor  # [B, 2]
    stage: torch.Tensor  # [B]

    def select(self, indices: Sequence[int]) -> FakeState:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return FakeState(self.x[idx], self.stage[idx])

    @staticmethod
    def cat(states: Sequence[FakeState]) -> FakeState:
        return FakeState(torch.cat([s.x for s in states]), torch.cat([s.stage for s in states]))


class FakeStagedModel:
    def __init__(self, num_stages: int = 4, delay_s: float = 0.0) -> None:
        self.num_stages = num_stages
        self.delay_s = delay_s
        self.calls: list[tuple[int, list[int]]] = []  # (stage, page ids) per advance
        self._lock = threading.Lock()

    def embed(self, inputs: dict[str, torch.Tensor]) -> FakeState:
        x = inputs["x"].float()
        return FakeState(x, torch.zeros(len(x), dtype=torch.long))

    def exit_logits(self, state: FakeState) -> torch.Tensor:
        stages = set(state.stage.tolist())
        assert len(stages) == 1, f"batch mixes stages {stages}"
        stage = stages.pop()
        with self._lock:
            self.calls.append((stage, [int(v) for v in state.x[:, 0].tolist()]))
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        # logits: column 0 = page id (lets a test read it back), column 1 = remaining stages.
        return torch.stack([state.x[:, 0], state.x[:, 1] - stage], dim=1)

    def advance(self, state: FakeState, stages: int = 1) -> tuple[torch.Tensor, FakeState]:
        assert len(set(state.stage.tolist())) == 1, "batch mixes stages"
        assert int(state.stage[0]) + stages <= self.num_stages - 1, "advanced past the final exit"
        new = FakeState(state.x, state.stage + stages)
        return self.exit_logits(new), new


def fake_decide(stage: int, logits: torch.Tensor, past: torch.Tensor | None) -> StageDecision:
    assert past is None if stage == 0 else past.shape[:2] == (len(logits), stage)
    remaining = logits[:, 1]
    return StageDecision(
        confidence=1.0 / (1.0 + remaining.clamp(min=0)),
        label=logits[:, 0].long(),
        exit=remaining <= 0,
        probs=torch.softmax(logits, dim=-1),
    )


def page_inputs(specs: Sequence[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
    return [{"x": torch.tensor([[pid, exit_at]], dtype=torch.float32)} for pid, exit_at in specs]
