"""Where an evaluation's accuracy comes from: per class, per page group (the document's source
collection, the page's text source, or any other tag the caller gives), per exit, and the
confusion matrix. Accuracy and calibrated ECE of every exit in each group use the project's one
ECE (classifier.calibration)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from classifier.calibration import ece


def confusion(labels: np.ndarray, predictions: np.ndarray, classes: int) -> list[list[int]]:
    """Counts: row = true label, column = predicted label."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix.tolist()


def group_figures(
    sel: np.ndarray,
    labels: np.ndarray,
    full: np.ndarray,
    early: np.ndarray,
    probs: torch.Tensor,
) -> dict[str, Any]:
    """Pages, full-depth and early-exit accuracy, and each exit's accuracy and calibrated ECE,
    of the pages `sel` (a bool mask) picks."""
    y = labels[sel]
    exit_probs = probs[torch.from_numpy(sel)]  # (n, S, C) calibrated
    conf = exit_probs.max(-1).values.numpy()
    right = (exit_probs.argmax(-1).numpy() == y[:, None]).astype(float)  # (n, S)
    stages = range(exit_probs.shape[1])
    return {
        "pages": int(sel.sum()),
        "full_depth_accuracy": float((full[sel] == y).mean()),
        "early_exit_accuracy": float((early[sel] == y).mean()),
        "exit_accuracy": [float(right[:, k].mean()) for k in stages],
        "exit_ece_calibrated": [ece(conf[:, k], right[:, k]) for k in stages],
    }


def breakdowns(
    label_names: Sequence[str],
    labels: torch.Tensor,
    full_predictions: np.ndarray,
    early_predictions: np.ndarray,
    probs: torch.Tensor,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """{"class": {label: figures}, <group>: {value: figures}, ...} and the confusion matrices
    (full depth and the early-exit answers). `probs` (N, S, C) are every exit's calibrated
    probabilities; `groups` maps a breakdown's name to each page's value (N of them)."""
    y = labels.numpy()
    full = np.asarray(full_predictions, dtype=np.int64)
    early = np.asarray(early_predictions, dtype=np.int64)
    columns: dict[str, np.ndarray] = {"class": np.array([label_names[i] for i in y], dtype=object)}
    for name, values in (groups or {}).items():
        if len(values) != len(y):
            raise ValueError(f"breakdown {name!r}: {len(values)} values for {len(y)} pages")
        columns[name] = np.array([str(v) for v in values], dtype=object)
    out: dict[str, Any] = {
        name: {
            value: group_figures(values == value, y, full, early, probs)
            for value in sorted(set(values.tolist()))
        }
        for name, values in columns.items()
    }
    matrix = {
        "labels": list(label_names),
        "rows": "true label",
        "columns": "predicted label",
        "full_depth": confusion(y, full, len(label_names)),
        "early_exit": confusion(y, early, len(label_names)),
    }
    return {"breakdowns": out, "confusion_matrix": matrix}
