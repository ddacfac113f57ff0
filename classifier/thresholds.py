"""Choosing exit thresholds on validation: the lowest mean compute whose early-exit accuracy stays
within a budget of full-depth accuracy. Works on precomputed calibrated probabilities of every
exit, so a search costs no model time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from classifier.policy import ExitPolicy, MaxSoftmax


@dataclass
class Simulation:
    accuracy: float
    mean_cost: float  # mean per-page cost in the units of `stage_costs`
    exit_stage: np.ndarray  # (N,) stage each page left at
    predictions: np.ndarray  # (N,)


def simulate(
    policy: ExitPolicy, probs: torch.Tensor, labels: torch.Tensor, stage_costs: Sequence[float]
) -> Simulation:
    """Replay `policy` on probs (N, S, C) of every exit: where would each page leave, and with
    what answer. stage_costs[s] = cost of a page that leaves at stage s."""
    n, s, _ = probs.shape
    exit_stage = torch.full((n,), s - 1, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    for k in range(s):
        leave = policy.decide(k, probs[:, : k + 1]) & ~done
        exit_stage[leave] = k
        done |= leave
    preds = probs[torch.arange(n), exit_stage].argmax(-1)
    costs = torch.tensor(stage_costs, dtype=torch.float64)[exit_stage]
    return Simulation(
        accuracy=float((preds == labels).double().mean()) if n else 0.0,
        mean_cost=float(costs.mean()) if n else 0.0,
        exit_stage=exit_stage.numpy(),
        predictions=preds.numpy(),
    )


def search_thresholds(
    probs: torch.Tensor,
    labels: torch.Tensor,
    stage_costs: Sequence[float],
    budget: float = 0.005,
    passes: int = 3,
) -> tuple[list[float], Simulation]:
    """Per-exit max-softmax thresholds: start from the best global threshold, then improve one
    exit at a time (coordinate descent) while accuracy >= full-depth accuracy - budget."""
    n, s, _ = probs.shape
    full_acc = float((probs[:, -1].argmax(-1) == labels).double().mean()) if n else 0.0
    floor = full_acc - budget - 1e-12
    conf = probs.max(-1).values
    candidates = (
        sorted({1.01, *np.quantile(conf[:, :-1].numpy(), np.linspace(0, 1, 41)).tolist()})
        if n
        else [1.01]
    )

    def run(th: list[float]) -> Simulation:
        return simulate(MaxSoftmax(s, th), probs, labels, stage_costs)

    best_th = [1.01] * (s - 1) + [0.0]
    best = run(best_th)
    for t in candidates:  # global threshold sweep
        th = [t] * (s - 1) + [0.0]
        sim = run(th)
        if sim.accuracy >= floor and sim.mean_cost < best.mean_cost:
            best_th, best = th, sim
    for _ in range(passes):  # per-exit refinement
        improved = False
        for k in range(s - 1):
            for t in candidates:
                th = list(best_th)
                th[k] = t
                sim = run(th)
                if sim.accuracy >= floor and (
                    sim.mean_cost < best.mean_cost - 1e-12
                    or (
                        abs(sim.mean_cost - best.mean_cost) <= 1e-12
                        and sim.accuracy > best.accuracy
                    )
                ):
                    best_th, best, improved = th, sim, True
        if not improved:
            break
    return [float(t) for t in best_th], best
