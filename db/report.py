"""`audit report`: one self-contained HTML page (figures embedded as PNG data URIs, no external
files or scripts) built from the audit queries: exit-depth histogram, confidence histogram per
class, reliability diagram, and re-route agreement over time."""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from sqlalchemy.orm import Session

from db import audit
from db.audit import AuditFilter

FIGURES = ("exit-depth", "confidence-by-class", "reliability", "reroute-agreement")


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def exit_depth_figure(exit_stages: dict[str, int]) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if exit_stages:
        stages = sorted(exit_stages, key=int)
        ax.bar([int(k) for k in stages], [exit_stages[k] for k in stages], color="tab:blue")
        ax.set_xticks([int(k) for k in stages])
        ax.set_xlabel("exit stage (early pass)")
        ax.set_ylabel("pages")
    else:
        _empty(ax, "no predictions")
    ax.set_title("Exit depth")
    fig.tight_layout()
    return _png(fig)


def confidence_figure(by_class: dict[str, list[float]], bins: int = 20) -> str:
    classes = sorted(by_class)
    cols = max(1, min(4, len(classes)))
    rows = max(1, -(-len(classes) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    if not classes:
        axes[0][0].set_visible(True)
        _empty(axes[0][0], "no predictions")
    for ax, name in zip(axes.flat, classes, strict=False):
        ax.set_visible(True)
        ax.hist(by_class[name], bins=bins, range=(0.0, 1.0), color="tab:green")
        ax.set_title(f"{name} (n={len(by_class[name])})", fontsize=9)
        ax.set_xlim(0, 1)
    fig.suptitle("Confidence of the final answer, per class")
    fig.tight_layout()
    return _png(fig)


def reliability_figure(per_pass: dict[str, list[dict[str, Any]]]) -> str:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    if any(per_pass.values()):
        for (name, rows), marker in zip(sorted(per_pass.items()), "os^", strict=False):
            if rows:
                ax.plot(
                    [r["mean_confidence"] for r in rows],
                    [r["accuracy"] for r in rows],
                    marker=marker,
                    label=f"{name} pass",
                )
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.3, "no human-labelled pages", ha="center", color="gray")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean confidence in bin")
    ax.set_ylabel("accuracy vs human labels")
    ax.set_title("Reliability")
    fig.tight_layout()
    return _png(fig)


def agreement_figure(days: list[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if days:
        x = list(range(len(days)))
        ax.bar(x, [d["pages"] for d in days], color="lightgray", label="re-routed pages")
        ax.set_ylabel("re-routed pages")
        ax.set_xticks(x, [d["day"] for d in days], rotation=45, ha="right", fontsize=8)
        ax2 = ax.twinx()
        ax2.plot(x, [100 * d["agreement"] for d in days], marker="o", color="tab:red")
        ax2.set_ylim(0, 105)
        ax2.set_ylabel("early = full (%)")
    else:
        _empty(ax, "no re-routed pages")
    ax.set_title("Re-route agreement over time")
    fig.tight_layout()
    return _png(fig)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "<p class='empty'>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def build_report(s: Session, f: AuditFilter | None = None, bins: int = 10) -> str:
    """The report as one HTML string. Every value from the store is HTML-escaped."""
    f = f or AuditFilter()
    summ = audit.summary(s, f)
    rer = audit.reroutes(s, f)
    cal = audit.calibration(s, f, bins)
    pairs = audit.calibration_pairs(s, f)
    per_pass = {
        name: audit.reliability_bins([(c, ok) for p, _, c, ok in pairs if p == name], bins)
        for name in sorted({p for p, *_ in pairs})
    }
    figures = {
        "exit-depth": ("Exit depth (early pass)", exit_depth_figure(summ["total"]["exit_stages"])),
        "confidence-by-class": (
            "Confidence per class",
            confidence_figure(audit.final_confidences_by_class(s, f)),
        ),
        "reliability": ("Reliability diagram", reliability_figure(per_pass)),
        "reroute-agreement": (
            "Re-route agreement over time",
            agreement_figure(audit.agreement_by_day(s, f)),
        ),
    }
    t = summ["total"]
    filters = ", ".join(f"{k}={v}" for k, v in f.as_dict().items() if v is not None) or "none"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>doctriage audit report</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
        "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}"
        "figure{margin:1em 0}img{max-width:100%}.empty{color:gray}",
        "</style></head><body><h1>doctriage audit report</h1>",
        f"<p>Generated {html.escape(datetime.now(UTC).isoformat(timespec='seconds'))}; "
        f"filters: {html.escape(filters)}.</p>",
        f"<p id='totals'>{t['pages']} pages; re-routed {t['rerouted']} "
        f"({100 * t['reroute_rate']:.1f}%); "
        f"mean confidence {html.escape(_fmt(t['mean_confidence']))}.</p>",
        "<h2>By model version and day</h2>",
        _table(
            summ["groups"],
            [
                "model_version",
                "day",
                "pages",
                "rerouted",
                "reroute_rate",
                "mean_confidence",
                "exit_stages",
                "classes",
            ],
        ),
    ]
    for key in FIGURES:
        caption, png = figures[key]
        parts.append(
            f"<figure id='{key}'><img alt='{html.escape(caption)}' "
            f"src='data:image/png;base64,{png}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts += [
        "<h2>Re-routes: early vs full depth</h2>",
        _table(rer["groups"], ["exit_stage", "class", "pages", "agree", "agreement"]),
        "<h2>Calibration on human-labelled pages</h2>",
        _table(
            cal["groups"], ["pass", "exit_stage", "pages", "accuracy", "mean_confidence", "ece"]
        ),
        "</body></html>",
    ]
    return "\n".join(parts)
