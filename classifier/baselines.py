"""Baselines the benchmarks measure the stage batcher against; not a serving or measuring path
(that is `classifier.predict`, through `classifier.stage_batcher`).

In-batch compaction: each batch runs on its own, and pages that exit are removed from it
(`StageState.select`) and never computed further, so the batch shrinks as it deepens
(bench/batching.py's "compaction"). Same decisions as the stage batcher (tested), but deep batches
run half-empty."""

from __future__ import annotations

import torch

from classifier.model import EarlyExitModel
from classifier.policy import ExitPolicy, NeverExit
from classifier.predict import model_policy
from classifier.stage_batcher import PagePrediction


@torch.inference_mode()
def predict_compacted(
    model: EarlyExitModel,
    inputs: dict[str, torch.Tensor],
    *,
    early_exit: bool = True,
    policy: ExitPolicy | None = None,
) -> list[PagePrediction]:
    """One batch of encoded pages through the staged forward, exited pages dropped."""
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
        return predict_compacted(model, inputs, early_exit=False)
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
            trail=tuple(float(v) for v in tops[i]),
            probs=tuple(float(v) for v in probs[i]),
        )
        for i in range(len(positions))
    ]
