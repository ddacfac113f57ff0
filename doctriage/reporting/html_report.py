"""`audit report`: one self-contained HTML page (figures embedded as PNG data URIs, no external
files or scripts) built from the audit queries: exit depth of the early pass (kept or re-routed),
confidence histogram per class, reliability diagram, and early-vs-full agreement over time.
Every figure labels its axes and counts in whole pages; "exit stage" is always where the early
pass stopped, and a full-depth answer is named as such."""

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
from matplotlib.ticker import MaxNLocator
from sqlalchemy.orm import Session

from classifier.calibration import DEFAULT_BINS
from db import audit, audit_loss
from db.audit import AuditFilter
from doctriage.reporting.calibration import calibration, reliability_by_pass

FIGURES = ("exit-depth", "confidence-by-class", "reliability", "reroute-agreement", "audit-loss")


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def _integer_counts(ax: Any) -> None:
    """Page counts are whole numbers: no 0.5-page ticks on a small store."""
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _stacked_pages(
    ax: Any, x: list[int], parts: list[tuple[list[int], str, str]], width: float = 0.8
) -> None:
    """Bars of page counts stacked bottom-up, one (counts, colour, legend label) per part."""
    bottom = [0] * len(x)
    for counts, color, label in parts:
        ax.bar(x, counts, width=width, bottom=bottom, color=color, label=label)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    _integer_counts(ax)
    ax.legend(fontsize=8, loc="upper left")


def _labelled_png(fig: Figure, ax: Any, xlabel: str, ylabel: str, title: str) -> str:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return _png(fig)


def exit_depth_figure(stages: list[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if stages:
        x = [r["exit_stage"] for r in stages]
        kept = [r["pages"] - r["rerouted"] for r in stages]
        rerouted = [r["rerouted"] for r in stages]
        ax.set_xticks(range(max(x) + 1))  # every stage, also those no page stopped at
        ax.set_ylim(0, max(r["pages"] for r in stages) * 1.3)  # room for the legend
        _stacked_pages(ax, x, [(kept, "tab:blue", "early answer kept"),
                               (rerouted, "tab:orange", "re-routed to full depth")])
    else:
        _empty(ax, "no predictions")
    return _labelled_png(
        fig, ax, "exit stage where the early pass stopped", "pages", "Exit depth of the early pass"
    )


def confidence_figure(by_class: dict[str, list[float]], bins: int = 20) -> str:
    classes = sorted(by_class)
    cols = max(1, min(4, len(classes)))
    rows = max(1, -(-len(classes) // cols))
    width = max(3.2 * cols, 6.0)  # wide enough for the title over one or two panels
    fig, axes = plt.subplots(rows, cols, figsize=(width, 2.5 * rows + 0.6), squeeze=False)
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
        _integer_counts(ax)
        ax.set_ylabel("pages", fontsize=8)
        ax.set_xlabel("confidence", fontsize=8)
    fig.suptitle("Confidence of the final answer, per final class")
    fig.tight_layout()
    return _png(fig)


def reliability_figure(per_pass: dict[str, list[dict[str, Any]]]) -> str:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if any(per_pass.values()):
        ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
        for (name, rows), marker in zip(sorted(per_pass.items()), "os^", strict=False):
            if rows:
                ax.plot(
                    [r["confidence"] for r in rows],
                    [r["accuracy"] for r in rows],
                    marker=marker,
                    label=f"{_answer(name)} answer ({sum(r['count'] for r in rows)} pages)",
                )
        ax.legend(fontsize=8, loc="upper left")
        ax.set_xlim(-0.03, 1.03)  # a margin: points at 0 or 1 are not cut in half
        ax.set_ylim(-0.03, 1.03)
    else:  # the message alone: no diagonal drawn through it
        _empty(ax, "no human-labelled pages yet\n(doctriage audit label PAGE_ID CLASS)")
    ax.set_xlabel("mean confidence in bin")
    ax.set_ylabel("accuracy vs human labels")
    ax.set_title("Reliability")
    fig.tight_layout()
    return _png(fig)


def agreement_figure(days: list[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    if days:
        n = len(days)
        x = list(range(n))
        agree = [d["agree"] for d in days]
        changed = [d["pages"] - d["agree"] for d in days]
        _stacked_pages(ax, x, [(agree, "tab:green", "full depth gave the early class"),
                               (changed, "tab:red", "full depth changed the class")], width=0.6)
        if n <= 20:  # the agreement over each bar; beyond that the labels would collide
            for xi, d in zip(x, days, strict=True):
                ax.annotate(f"{d['agreement']:.0%} agree", (xi, d["pages"]), ha="center",
                            va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        step = -(-n // 12)  # at most 12 date labels
        ax.set_xticks(x[::step], [d["day"] for d in days][::step],
                      rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center",
                      fontsize=8)
        pad = max(0.0, (5 - n) / 2)  # a lone day is one slim bar, not the whole width
        ax.set_xlim(-0.5 - pad, n - 0.5 + pad)
        ax.set_ylim(0, max(d["pages"] for d in days) * 1.45)  # room for labels and legend
    else:
        _empty(ax, "no re-routed pages")
    return _labelled_png(
        fig, ax, "day of the early answer (UTC)", "re-routed pages",
        "Early vs full-depth answers on re-routed pages",
    )


def loss_figure(days: list[dict[str, Any]]) -> str:
    """The audit sample's loss estimate per day with its 95% Wilson interval, in percent."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    if days:
        n = len(days)
        x = list(range(n))
        est = [100 * d["estimate"] for d in days]
        below = [e - 100 * d["lower"] for e, d in zip(est, days, strict=True)]
        above = [100 * d["upper"] - e for e, d in zip(est, days, strict=True)]
        ax.errorbar(x, est, yerr=[below, above], fmt="o", color="tab:purple", capsize=4,
                    label="estimate, 95% Wilson interval")
        if n <= 20:  # the sample size under each point; beyond that the labels would collide
            for xi, d in zip(x, days, strict=True):
                ax.annotate(f"n={d['pages']}", (xi, 100 * d["upper"]), ha="center",
                            va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        step = -(-n // 12)
        ax.set_xticks(x[::step], [d["day"] for d in days][::step],
                      rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center",
                      fontsize=8)
        pad = max(0.0, (5 - n) / 2)
        ax.set_xlim(-0.5 - pad, n - 0.5 + pad)
        ax.set_ylim(0, max(100 * d["upper"] for d in days) * 1.3 + 0.5)
        ax.legend(fontsize=8, loc="upper left")
    else:
        _empty(ax, "no audit-sampled pages with a full-depth answer")
    return _labelled_png(
        fig, ax, "day of the early answer (UTC)", "early answers differing from full depth (%)",
        "Early-exit loss on the audit sample",
    )


def _answer(which: str) -> str:
    return "full-depth" if which == "full" else which


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "<p class='empty'>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows
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


def _share(part: int, rate: float | None) -> str:
    return f"{part} ({'-' if rate is None else f'{100 * rate:.1f}%'})"


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
    "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}"
    "figure{margin:1em 0 2em}img{max-width:100%}.empty{color:gray}"
    "figcaption{color:#333;font-size:14px;max-width:760px}"
)


def build_report(s: Session, f: AuditFilter | None = None, bins: int = DEFAULT_BINS) -> str:
    """The report as one HTML string. Every value from the store is HTML-escaped."""
    f = f or AuditFilter()
    figures = _figures(s, f, bins)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>doctriage audit report</title><style>",
        _STYLE,
        "</style></head><body><h1>doctriage audit report</h1>",
    ]
    summ = audit.summary(s, f)
    parts += [*_summary_section(summ, f), *_ocr_section(summ)]
    for key in FIGURES:
        parts.append(_figure_html(key, *figures[key]))
    parts += [
        *_reroutes_section(audit.reroutes(s, f)),
        *_calibration_section(calibration(s, f, bins), bins),
        "</body></html>",
    ]
    return "\n".join(parts)


def _figures(s: Session, f: AuditFilter, bins: int) -> dict[str, tuple[str, str, str]]:
    """key -> (title, caption, PNG as base64). Captions say how to read a figure (its title is
    inside the image)."""
    per_pass = reliability_by_pass(s, f, bins)
    return {
        "exit-depth": (
            "Exit depth of the early pass",
            "Each page once, at the exit where the early pass stopped (0 is the first exit). "
            "Orange: pages answered again at full depth, because the early answer was below the "
            "confidence bar or the page was drawn for the audit sample.",
            exit_depth_figure(audit.exit_depth(s, f)),
        ),
        "confidence-by-class": (
            "Confidence of the final answer, per final class",
            "The confidence of each page's final answer (the full-depth one for re-routed "
            "pages), one panel per final class: a class with many pages at low confidence is "
            "one the model is unsure of.",
            confidence_figure(audit.final_confidences_by_class(s, f)),
        ),
        "reliability": (
            "Reliability diagram",
            f"Pages with a human label, in {bins} confidence bins: a point below the diagonal "
            "is over-confident (right less often than it claims), above it under-confident."
            if any(per_pass.values())
            else "No page has a human label yet: label some with doctriage audit label PAGE_ID "
            "CLASS to see how far confidence can be trusted.",
            reliability_figure(per_pass),
        ),
        "reroute-agreement": (
            "Early vs full-depth answers on re-routed pages",
            "Re-routed pages per UTC day of their early answer: green where the full-depth pass "
            "kept the early class, red where it changed it. Low agreement means the early exits "
            "are often wrong on the pages they are unsure of.",
            agreement_figure(audit.agreement_by_day(s, f)),
        ),
        "audit-loss": (
            "Early-exit loss on the audit sample",
            "Per UTC day, the share of audit-sampled early answers that the full-depth pass "
            "answers differently, with its 95% Wilson interval and the number of sampled pages. "
            "The audit sample is drawn whatever the confidence, so unlike the re-routes above it "
            "estimates what early exit costs on all traffic (doctriage audit loss).",
            loss_figure(audit_loss.loss_by_day(s, f)),
        ),
    }


def _figure_html(key: str, title: str, caption: str, png: str) -> str:
    return (
        f"<figure id='{key}'><img alt='{html.escape(title)}' "
        f"src='data:image/png;base64,{png}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _summary_section(summ: dict[str, Any], f: AuditFilter) -> list[str]:
    t = summ["total"]
    filters = ", ".join(f"{k}={v}" for k, v in f.as_dict().items() if v is not None) or "none"
    return [
        f"<p>Generated {html.escape(datetime.now(UTC).isoformat(timespec='seconds'))}; "
        f"filters: {html.escape(filters)}.</p>",
        f"<p id='totals'>{t['pages']} pages; re-routed {t['rerouted']} "
        f"({100 * t['reroute_rate']:.1f}%) to full depth; "
        f"mean confidence of the early pass {html.escape(_fmt(t['mean_confidence']))}.</p>",
        "<h2>By model version and day</h2>",
        _table(
            ["model version", "day (UTC)", "pages", "re-routed to full depth",
             "mean confidence (early pass)", "pages by early exit stage", "pages by final class"],
            [
                [g["model_version"], g["day"], g["pages"], _share(g["rerouted"], g["reroute_rate"]),
                 g["mean_confidence"], g["exit_stages"], g["classes"]]
                for g in summ["groups"]
            ],
        ),
    ]


def _ocr_section(summ: dict[str, Any]) -> list[str]:
    """Pages that needed OCR (scans) and the share the OCR-free exit answered without it, per
    final class and day: what deferred OCR saved."""
    t = summ["total"]["ocr"]
    rows = [[g["model_version"], g["day"], label, c["needed"], _share(c["avoided"],
                                                                       c["avoided_share"])]
            for g in summ["groups"] for label, c in g["ocr"]["classes"].items()]
    return [
        "<h2>OCR avoided</h2>",
        f"<p id='ocr-avoided'>{t['needed']} pages needed OCR; the OCR-free exit answered "
        f"{_share(t['avoided'], t['avoided_share'])} of them without it.</p>",
        _table(["model version", "day (UTC)", "final class", "pages that needed OCR",
                "OCR avoided"], rows),
    ]


def _reroutes_section(rer: dict[str, Any]) -> list[str]:
    return [
        "<h2>Re-routes: early vs full-depth answers</h2>",
        _table(
            ["early exit stage", "early class", "re-routed pages",
             "full-depth class = early class", "agreement"],
            [
                [g["exit_stage"], g["class"], g["pages"], g["agree"], f"{g['agreement']:.1%}"]
                for g in rer["groups"]
            ],
        ),
    ]


def _calibration_section(cal: dict[str, Any], bins: int) -> list[str]:
    return [
        "<h2>Calibration on human-labelled pages</h2>",
        "<p>Against each page's newest human label. A full-depth row counts the pages re-routed "
        "from that early exit stage, answered again with all layers.</p>" if cal["groups"] else "",
        _table(
            ["answer", "early exit stage", "pages", "accuracy", "mean confidence",
             f"ECE ({bins} bins)"],
            [
                [f"{_answer(g['pass'])} pass", g["exit_stage"], g["pages"], g["accuracy"],
                 g["mean_confidence"], g["ece"]]
                for g in cal["groups"]
            ],
        ),
    ]
