"""PNG figures for evaluation: the accuracy/compute trade-off per policy and reliability
diagrams."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def tradeoff_plot(
    sweeps: dict[str, list[dict]], chosen: dict, full_accuracy: float, path: Path
) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, points in sweeps.items():
        pts = sorted(points, key=lambda p: p["flops_ratio"])
        ax.plot(
            [p["flops_ratio"] for p in pts],
            [100 * p["accuracy"] for p in pts],
            marker=".",
            label=name,
        )
    ax.scatter(
        [chosen["flops_ratio"]],
        [100 * chosen["accuracy"]],
        color="red",
        zorder=5,
        label="chosen per-exit thresholds",
    )
    ax.axhline(100 * full_accuracy, color="gray", linestyle="--", label="full depth")
    ax.set_xlabel("compute (FLOPs relative to full depth)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Early exit: accuracy vs compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reliability_plot(exits: list[dict], path: Path) -> Path:
    """One panel per exit: accuracy per confidence bin, before and after temperature scaling."""
    cols = min(4, len(exits))
    rows = -(-len(exits) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, ex in zip(axes.flat, exits, strict=False):
        for key, color, label in (
            ("bins_raw", "tab:orange", "raw"),
            ("bins_calibrated", "tab:blue", "calibrated"),
        ):
            bins = ex[key]
            ax.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                marker="o",
                color=color,
                label=f"{label} ECE {ex['ece_' + label]:.3f}",
            )
        ax.plot([0, 1], [0, 1], color="gray", linestyle=":")
        ax.set_title(f"exit {ex['stage']} (layer {ex['layer']})", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(exits) :]:
        ax.axis("off")
    fig.supxlabel("confidence")
    fig.supylabel("accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_plot(matrix: dict, path: Path) -> Path:
    """The confusion matrices (counts; row = true label, column = predicted) side by side:
    full depth and the early-exit answers."""
    names = matrix["labels"]
    panels = [("full depth", matrix["full_depth"]), ("early exit", matrix["early_exit"])]
    size = max(4.0, 0.42 * len(names) + 2.0)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size), squeeze=False)
    for ax, (title, counts) in zip(axes.flat, panels, strict=True):
        ax.imshow(counts, cmap="Blues")
        for i, row in enumerate(counts):
            for j, count in enumerate(row):
                if count:
                    ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                            color="white" if i == j else "black")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("predicted label")
        ax.set_ylabel("true label")
        right = sum(counts[i][i] for i in range(len(names)))
        total = sum(map(sum, counts))
        ax.set_title(f"{title}: {right}/{total} right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
