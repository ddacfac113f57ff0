"""Batch prediction with real stopping: pages that exit are removed from the batch
(`StageState.select`) and never computed further. Full depth is `early_exit=False`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from classifier.inputs import PageLike
from classifier.model import EarlyExitModel
from classifier.policy import ExitPolicy, NeverExit, policy_from_json


@dataclass
class PagePrediction:
    label: str
    confidence: float  # calibrated probability of `label` at the exit taken
    exit_stage: int
    exit_layer: int  # encoder layers run for this page (0 = pre-encoder exit)
    trail: list[float] = field(default_factory=list)  # calibrated top probability per exit passed
    probs: list[float] = field(default_factory=list)  # calibrated class probabilities at the exit


def model_policy(model: EarlyExitModel) -> ExitPolicy:
    return policy_from_json(model.policy_spec, model.num_stages)


@torch.inference_mode()
def predict_pages(
    model: EarlyExitModel,
    pages: Sequence[PageLike],
    *,
    early_exit: bool = True,
    batch_size: int = 16,
    policy: ExitPolicy | None = None,
) -> list[PagePrediction]:
    out: list[PagePrediction] = []
    for start in range(0, len(pages), batch_size):
        inputs = model.encode(pages[start : start + batch_size])
        out.extend(predict_encoded(model, inputs, early_exit=early_exit, policy=policy))
    return out


@torch.inference_mode()
def predict_encoded(
    model: EarlyExitModel,
    inputs: dict[str, torch.Tensor],
    *,
    early_exit: bool = True,
    policy: ExitPolicy | None = None,
) -> list[PagePrediction]:
    """One batch of encoded pages through the staged forward."""
    model.eval()
    if not early_exit:
        state = model.embed(inputs)
        logits, state = model.advance(state, stages=model.num_stages)
        return _predictions(
            model,
            model.calibrated_probs(state.stage, logits),
            state.stage,
            torch.arange(len(state)),
            None,
        )
    policy = policy or model_policy(model)
    if isinstance(policy, NeverExit):
        return predict_encoded(model, inputs, early_exit=False)
    state = model.embed(inputs)
    batch = len(state)
    logits = model.exit_logits(state)
    alive = torch.arange(batch)  # original positions of the pages still in the batch
    trail = None
    results: list[PagePrediction | None] = [None] * batch
    while True:
        probs = model.calibrated_probs(state.stage, logits)
        step = probs.unsqueeze(1).cpu()
        trail = step if trail is None else torch.cat([trail, step], dim=1)
        leave = policy.decide(state.stage, trail)
        if leave.any():
            for pos, pred in zip(
                alive[leave].tolist(),
                _predictions(
                    model,
                    probs[leave.to(probs.device)],
                    state.stage,
                    alive[leave],
                    trail[leave],
                ),
                strict=True,
            ):
                results[pos] = pred
        keep = ~leave
        if not keep.any():
            break
        if not keep.all():  # drop the pages that left: they are never computed further
            state = state.select(keep.nonzero(as_tuple=True)[0])
            alive, trail = alive[keep], trail[keep]
        logits, state = model.advance(state)
    return [r for r in results if r is not None]


def _predictions(
    model: EarlyExitModel,
    probs: torch.Tensor,
    stage: int,
    positions: torch.Tensor,
    trail: torch.Tensor | None,
) -> list[PagePrediction]:
    probs = probs.float().cpu()
    conf, idx = probs.max(dim=-1)
    tops = trail.max(dim=-1).values if trail is not None else conf.unsqueeze(1)
    return [
        PagePrediction(
            label=model.label_names[int(idx[i])],
            confidence=float(conf[i]),
            exit_stage=stage,
            exit_layer=model.exit_layers[stage],
            trail=[float(v) for v in tops[i]],
            probs=[float(v) for v in probs[i]],
        )
        for i in range(len(positions))
    ]
