"""After training: one temperature per exit (validation NLL), ECE before/after, and per-exit
thresholds at the lowest compute whose early-vs-full disagreement holds the budget
(classifier.thresholds: an upper confidence bound by default, or the old point estimate)."""

from __future__ import annotations

import torch

from classifier.calibration import ece, fit_temperature
from classifier.model import EarlyExitModel
from classifier.policy import NeverExit
from classifier.thresholds import DEFAULT_RULE, ThresholdRule, select_thresholds


def stage_cost_layers(model: EarlyExitModel) -> list[float]:
    """Cost of leaving at each stage for the threshold search, in FLOPs relative to full depth."""
    full = model.full_flops()
    return [f / full for f in model.stage_flops()]


def calibrate_model(
    model: EarlyExitModel,
    logits: torch.Tensor,
    labels: torch.Tensor,
    rule: ThresholdRule = DEFAULT_RULE,
) -> dict:
    """`logits` (N, S, C) of every exit on validation pages. Sets the model's temperatures,
    thresholds (chosen by `rule`, see classifier.thresholds) and policy; returns what was found
    (for the training report and exits.json)."""
    temps, rows = [], []
    for k in range(model.num_stages):
        t = fit_temperature(logits[:, k], labels)
        temps.append(t)
        raw = torch.softmax(logits[:, k].double(), -1)
        cal = torch.softmax(logits[:, k].double() / t, -1)
        correct = (raw.argmax(-1) == labels).numpy()
        rows.append(
            {
                "stage": k,
                "layer": model.exit_layers[k],
                "temperature": round(t, 4),
                "accuracy": float(correct.mean()) if len(labels) else 0.0,
                "ece_raw": ece(raw.max(-1).values.numpy(), correct),
                "ece_calibrated": ece(cal.max(-1).values.numpy(), correct),
            }
        )
    model.temperatures.copy_(torch.tensor(temps, dtype=torch.float32))
    probs = torch.stack(
        [model.calibrated_probs(k, logits[:, k]) for k in range(model.num_stages)], 1
    )
    choice = select_thresholds(probs, labels, stage_cost_layers(model), rule)
    thresholds, sim = choice.thresholds, choice.simulation
    model.thresholds = thresholds
    model.policy_spec = {"name": "max_softmax", "thresholds": thresholds}
    if choice.fallback:  # served as a plain full-depth pass: no intermediate head is computed
        model.policy_spec = NeverExit(model.num_stages).to_json()
    return {
        "validation_pages": len(labels),
        "exits": rows,
        "thresholds": thresholds,
        "budget": rule.budget,
        "early_exit_val_accuracy": sim.accuracy,
        "full_depth_val_accuracy": rows[-1]["accuracy"],
        "val_flops_ratio": 1.0 if choice.fallback else sim.mean_cost,
        "threshold_selection": choice.record,
    }
