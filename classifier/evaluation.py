"""Evaluate a bundle on labelled encoded pages: per-exit accuracy and calibration, threshold
sweeps per policy (replayed on every exit's probabilities), breakdowns (per class, per page
group such as source and text source, and the confusion matrix: classifier.breakdowns), and the
early-exit policy as served:
accuracy, exit counts and compute of the stage batcher's answers, and its measured wall-clock
speed-up over full depth through the same batcher (same pages, same batch size, same run)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from classifier.breakdowns import breakdowns
from classifier.calibrate import stage_cost_layers
from classifier.calibration import ece, reliability_bins
from classifier.model import EarlyExitModel
from classifier.plots import confusion_plot, reliability_plot, tradeoff_plot
from classifier.policy import Entropy, ExitPolicy, MaxSoftmax, NeverExit, Patience
from classifier.predict import ENGINE, model_policy, predict_rows, split_rows
from classifier.stage_batcher import PagePrediction
from classifier.thresholds import simulate
from classifier.training import Inputs, all_logits_and_gates


def evaluate(
    model: EarlyExitModel,
    inputs: Inputs,
    labels: torch.Tensor,
    *,
    batch_size: int = 16,
    out_dir: Path | None = None,
    timing_rounds: int = 2,
    policy: ExitPolicy | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict:
    """Per-exit figures from every exit's logits; the early-exit figures from the answers of
    the engine that serves (the stage batcher, max_batch = `batch_size`), which also times it.
    `groups` names page tags to break the figures down by (e.g. "source", "text_source")."""
    model.eval()
    n = len(labels)
    logits, gates = all_logits_and_gates(model, inputs, batch_size)  # (N, S, C), (N, S)
    probs = torch.stack(
        [model.calibrated_probs(k, logits[:, k]) for k in range(model.num_stages)], 1
    )
    exits = exit_reports(model, logits, gates, probs, labels)
    full_acc = exits[-1]["accuracy"]
    policy = policy or model_policy(model)
    costs = stage_cost_layers(model)
    answers = predict_rows(model, split_rows(inputs), batch_size=batch_size, policy=policy)
    # NeverExit runs as a plain full-depth pass: no intermediate head, cost 1 at every stage
    served = [1.0] * len(costs) if isinstance(policy, NeverExit) else costs
    early = early_exit_figures(model, answers, labels, served)
    timing = measure_speedup(model, inputs, policy, batch_size, timing_rounds)
    report = {
        "pages": n,
        "model_version": model.version,
        "batch_size": batch_size,
        "full_depth": {"accuracy": full_acc, "layers": model.exit_layers[-1]},
        "exits": [{k: v for k, v in e.items() if not k.startswith("bins")} for e in exits],
        "early_exit": {
            "policy": policy.to_json(),
            "accuracy": early["accuracy"],
            "accuracy_drop_points": 100 * (full_acc - early["accuracy"]),
            "mean_layers": early["mean_layers"],
            "flops_ratio": early["flops_ratio"],
            "ideal_speedup": 1.0 / early["flops_ratio"] if early["flops_ratio"] else None,
            "speedup_wall": timing["speedup_wall"],
            "engine": timing["engine"],
            "exit_counts": early["exit_counts"],
            "timing": timing,
        },
        "sweeps": policy_sweeps(model, probs, labels, costs),
    }
    index = {name: i for i, name in enumerate(model.label_names)}
    early_pred = np.array([index[a.label] for a in answers], dtype=np.int64)
    report.update(breakdowns(model.label_names, labels, logits[:, -1].argmax(-1).numpy(),
                             early_pred, probs, groups))
    if out_dir is not None:
        report["plots"] = write_plots(report, exits, out_dir)
    return report


def write_plots(report: dict, exits: list[dict], out_dir: Path) -> dict[str, str]:
    """The PNG figures beside the JSON: trade-off, reliability, confusion matrices."""
    out_dir.mkdir(parents=True, exist_ok=True)
    full_acc = report["full_depth"]["accuracy"]
    return {
        "tradeoff": str(
            tradeoff_plot(report["sweeps"], report["early_exit"], full_acc,
                          out_dir / "tradeoff.png")
        ),
        "reliability": str(reliability_plot(exits, out_dir / "reliability.png")),
        "confusion": str(confusion_plot(report["confusion_matrix"], out_dir / "confusion.png")),
    }


def exit_reports(
    model: EarlyExitModel,
    logits: torch.Tensor,
    gates: torch.Tensor,
    probs: torch.Tensor,
    labels: torch.Tensor,
) -> list[dict]:
    """Accuracy, calibration (raw and calibrated) and gate accuracy of every exit."""
    n = len(labels)
    # gate target: the final head is right for this page
    final_right = logits[:, -1].argmax(-1) == labels
    exits = []
    for k in range(model.num_stages):
        raw = torch.softmax(logits[:, k].double(), -1)
        correct = (raw.argmax(-1) == labels).numpy()
        raw_conf = raw.max(-1).values.numpy()
        cal_conf = probs[:, k].max(-1).values.numpy()
        exits.append(
            {
                "stage": k,
                "layer": model.exit_layers[k],
                "accuracy": float(correct.mean()) if n else 0.0,
                "ece_raw": ece(raw_conf, correct),
                "ece_calibrated": ece(cal_conf, correct),
                "temperature": float(model.temperatures[k]),
                "threshold": float(model.thresholds[k]),
                # how often the gate head rightly predicts whether the final head is right
                "gate_accuracy": float(((gates[:, k] > 0) == final_right).double().mean())
                if n
                else 0.0,
                "bins_raw": reliability_bins(raw_conf, correct),
                "bins_calibrated": reliability_bins(cal_conf, correct),
            }
        )
    return exits


def early_exit_figures(
    model: EarlyExitModel,
    answers: Sequence[PagePrediction],
    labels: torch.Tensor,
    stage_costs: Sequence[float],
) -> dict:
    """Accuracy, exit counts, mean layers and compute (in `stage_costs` units, full depth = 1)
    of the engine's answers against the labels (indices into the model's label names)."""
    if not answers:
        return {"accuracy": 0.0, "mean_layers": 0.0, "flops_ratio": 0.0, "exit_counts": []}
    names = model.label_names
    stages = np.array([a.exit_stage for a in answers], dtype=np.int64)
    right = [a.label == names[int(y)] for a, y in zip(answers, labels.tolist(), strict=True)]
    return {
        "accuracy": float(np.mean(right)),
        "mean_layers": float(np.mean([a.exit_layer for a in answers])),
        "flops_ratio": float(np.asarray(stage_costs, dtype=np.float64)[stages].mean()),
        "exit_counts": np.bincount(stages, minlength=model.num_stages).tolist(),
    }


def policy_sweeps(
    model: EarlyExitModel, probs: torch.Tensor, labels: torch.Tensor, costs: list[float]
) -> dict[str, list[dict]]:
    s = model.num_stages
    layers = np.array(model.exit_layers)

    def point(policy: ExitPolicy, param: float) -> dict:
        sim = simulate(policy, probs, labels, costs)
        return {
            "param": param,
            "accuracy": sim.accuracy,
            "flops_ratio": sim.mean_cost,
            "mean_layers": float(layers[sim.exit_stage].mean()) if len(labels) else 0.0,
        }

    grid = [0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999, 1.01]
    return {
        "max_softmax (global)": [point(MaxSoftmax.global_threshold(s, t), t) for t in grid],
        "entropy": [
            point(Entropy(s, t), t) for t in (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
        ],
        "patience": [point(Patience(s, p), p) for p in range(1, s + 1)],
    }


def measure_speedup(
    model: EarlyExitModel, inputs: Inputs, policy: ExitPolicy, batch_size: int, rounds: int = 2
) -> dict:
    """Wall time of full depth vs early exit through the stage batcher in drain mode (the
    engine that serves), max_batch = `batch_size`: each round drains every page through a
    full-depth batcher, then the same pages through an early-exit one deciding with `policy`,
    so machine load hits both alike; one warm-up batch each first."""
    rows = split_rows(inputs)
    base = {"engine": ENGINE, "max_batch": batch_size, "threads": torch.get_num_threads()}
    if not rows or rounds < 1:  # rounds=0: accuracy only (the default bundle's demo check)
        return {"full_s": 0.0, "early_exit_s": 0.0, "speedup_wall": None, "rounds": 0, **base}

    def drain_s(early_exit: bool, pages: list[dict[str, torch.Tensor]]) -> float:
        t0 = time.perf_counter()
        predict_rows(model, pages, early_exit=early_exit, batch_size=batch_size, policy=policy)
        return time.perf_counter() - t0

    model.eval()
    drain_s(False, rows[:batch_size])
    drain_s(True, rows[:batch_size])
    full = ee = 0.0
    for _ in range(rounds):
        full += drain_s(False, rows)
        ee += drain_s(True, rows)
    return {
        "full_s": full,
        "early_exit_s": ee,
        "speedup_wall": full / ee if ee else None,
        "rounds": rounds,
        **base,
    }
