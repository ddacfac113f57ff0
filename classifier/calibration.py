"""Temperature scaling (one temperature per exit, fitted on validation NLL) and calibration
error (ECE, reliability bins): the one definition that training, evaluation and the audit
commands share, so a bundle's ECE and the audit's ECE of the same pages are the same number.

Bins are equal-width; bin k holds confidences in (k/bins, (k+1)/bins], and 0 falls in the
first. torch is imported only by the temperature functions (the audit commands never need it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

# The bins of every ECE the project reports (bundle metadata, evaluate, audit, report).
DEFAULT_BINS = 15


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    import torch

    return float(torch.nn.functional.cross_entropy(logits.double() / temperature, labels.long()))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature minimising NLL: a coarse log-grid, then a golden-section refinement.
    (A grid cannot diverge the way LBFGS can on tiny or separable validation sets.)"""
    if len(labels) == 0:
        return 1.0
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 80))
    losses = [nll(logits, labels, t) for t in grid]
    i = int(np.argmin(losses))
    lo, hi = np.log(grid[max(0, i - 1)]), np.log(grid[min(len(grid) - 1, i + 1)])
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if nll(logits, labels, float(np.exp(a))) < nll(logits, labels, float(np.exp(b))):
            hi = b
        else:
            lo = a
    best = float(np.exp((lo + hi) / 2))
    return best if nll(logits, labels, best) <= losses[i] else float(grid[i])


def reliability_bins(
    confidence: Any, correct: Any, bins: int = DEFAULT_BINS
) -> list[dict[str, float]]:
    """Equal-width confidence bins: count, mean confidence and accuracy of each non-empty bin."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin k holds (edges[k], edges[k+1]]; confidence 0 falls in the first bin
    idx = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out = []
    for k in range(bins):
        sel = idx == k
        if sel.any():
            out.append(
                {
                    "lo": float(edges[k]),
                    "hi": float(edges[k + 1]),
                    "count": int(sel.sum()),
                    "confidence": float(confidence[sel].mean()),
                    "accuracy": float(correct[sel].mean()),
                }
            )
    return out


def ece(confidence: Any, correct: Any, bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error: sum over bins of |accuracy - confidence| weighted by share."""
    n = len(confidence)
    if n == 0:
        return 0.0
    return float(
        sum(
            b["count"] / n * abs(b["accuracy"] - b["confidence"])
            for b in reliability_bins(confidence, correct, bins)
        )
    )


def summarize(pairs: Sequence[tuple[float, bool]], bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Pages, accuracy, mean confidence and ECE of (confidence, correct) pairs (at least one)."""
    confidence = np.array([c for c, _ in pairs], dtype=float)
    correct = np.array([ok for _, ok in pairs], dtype=float)
    return {
        "pages": len(pairs),
        "accuracy": float(correct.mean()),
        "mean_confidence": float(confidence.mean()),
        "ece": ece(confidence, correct, bins),
    }
