"""Choose exit thresholds for a bundle on labelled DATA (`doctriage thresholds fit`): every
exit's calibrated probabilities on the pages once, then each selection of classifier.thresholds
(`ucb`, `point`) on them, side by side. A report only: the bundle is not changed (its version
names its weights, so thresholds rewritten in place would go unnoticed by stored predictions);
`doctriage train --selection/--delta` writes them into a bundle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classifier.bundle import load_bundle
from classifier.calibrate import stage_cost_layers
from classifier.model import EarlyExitModel
from classifier.thresholds import (
    DEFAULT_DELTA,
    SELECTIONS,
    ThresholdChoice,
    ThresholdRule,
    select_thresholds,
)
from classifier.training import all_logits
from doctriage.bundle_evaluation import EvaluationOptions, labelled_pages


@dataclass(frozen=True)
class FitOptions:
    """The budget (points of pages whose early answer may differ from full depth), the bound's
    delta, and how DATA is read (split, batch size, cache: as `evaluate`)."""

    budget_points: float = 0.5
    delta: float = DEFAULT_DELTA
    data: EvaluationOptions = field(default_factory=EvaluationOptions)


def fit_thresholds(model_dir: Path, data_dir: Path, opts: FitOptions | None = None) -> dict:
    opts = opts or FitOptions()
    model = load_bundle(model_dir, device=opts.data.device)
    data = labelled_pages(model, model_dir, data_dir, opts.data)
    logits = all_logits(model, data.inputs, opts.data.batch_size)
    probs = torch.stack(
        [model.calibrated_probs(k, logits[:, k]) for k in range(model.num_stages)], 1
    )
    costs = stage_cost_layers(model)
    calibration = getattr(model, "metadata", {}).get("calibration", {})
    return {
        "pages": len(data.labels),
        "documents": len(data.docs),
        "split": opts.data.split,
        "budget_points": opts.budget_points,
        "delta": opts.delta,
        "full_depth_accuracy": float((logits[:, -1].argmax(-1) == data.labels).double().mean()),
        "bundle": {"thresholds": model.thresholds, "policy": model.policy_spec,
                   "threshold_selection": calibration.get("threshold_selection")},
        "choices": {
            selection: choice_figures(model, select_thresholds(
                probs, data.labels, costs,
                ThresholdRule(opts.budget_points / 100, selection, opts.delta)))
            for selection in SELECTIONS
        },
    }


def choice_figures(model: EarlyExitModel, choice: ThresholdChoice) -> dict[str, Any]:
    """A choice's thresholds and record, and its replay on the pages: accuracy, mean exit stage
    and layers, compute (a fallback runs as a plain full-depth pass: compute 1)."""
    sim = choice.simulation
    stages = sim.exit_stage
    return {
        "thresholds": choice.thresholds,
        **choice.record,
        "accuracy": sim.accuracy,
        "mean_exit_stage": float(stages.mean()) if len(stages) else 0.0,
        "mean_layers": float(np.asarray(model.exit_layers)[stages].mean()) if len(stages) else 0.0,
        "flops_ratio": 1.0 if choice.fallback else sim.mean_cost,
        "exit_counts": np.bincount(stages, minlength=model.num_stages).tolist(),
    }
