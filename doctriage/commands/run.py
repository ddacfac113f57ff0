"""`doctriage run PATH... [--json] [--model DIR] [--allow-failures]`: classify documents
in-process (no broker), store everything in the SQLite store under DOCTRIAGE_HOME, and print what
each document is, then the totals; warn when the model does not seem to fit the documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from doctriage.commands._common import fail, quiet_workers_logs
from pipelines.errors import one_line

if TYPE_CHECKING:  # workers.embedded loads SQLAlchemy and torch: imported by the job
    from workers.embedded import RunSummary


@quiet_workers_logs
def run(
    paths: Annotated[list[str], typer.Argument(
        help="PDF/TIFF/PNG/JPEG files or folders, or s3://BUCKET/PREFIX.")],
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print every document and page, and the totals, as JSON.")] = False,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Model bundle folder (default: the default bundle)."),
    ] = None,
    allow_failures: Annotated[bool, typer.Option(
        "--allow-failures",
        help="Exit 0 even when a document or page failed (failures are still listed); "
        "without it such a run exits 1.")] = False,
) -> None:
    """Classify every page of PATH... in this process: one line per document (its labels with
    page ranges, lowest confidence, exit stages, text sources, time), then the totals.

    Exit status 0: all classified; 1: a document or page failed (0 with --allow-failures).
    """
    from doctriage.jobs import JobError
    from doctriage.jobs.run import RunOptions, classify_here
    from doctriage.settings import get_settings

    try:
        summary = classify_here(get_settings(), RunOptions(paths, model))
    except JobError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        typer.echo("\n".join([*render_documents(summary.to_dict()["per_document"]), "",
                               render(summary)]))
    for line in summary.warnings:  # after the summary, where a reader's eye ends up
        typer.echo(line, err=True)
    if summary.any_failed and not allow_failures:
        raise typer.Exit(1)


# Longest document name shown before it is shortened in the middle (the JSON has it whole).
NAME_WIDTH = 48
# Label runs shown per document line before "+N more".
SPANS_SHOWN = 4


def render_documents(docs: list[dict[str, Any]]) -> list[str]:
    """One line per document (the dicts of RunSummary.to_dict()["per_document"])."""
    width = min(NAME_WIDTH, max((len(d["name"]) for d in docs), default=0))
    return [_document_line(d, width) for d in docs]


def _document_line(d: dict[str, Any], width: int) -> str:
    name = _shorten(d["name"], width).ljust(width)
    if d["state"] == "SKIPPED":
        return f"{name}  skipped: {one_line(d['error'] or '')}"
    n = d["page_count"]
    parts = [name, f"{n:>3} page" + (" " if n == 1 else "s")]
    if d["state"] == "FAILED":
        parts.append("FAILED (reason below)")
    if any(p["label"] for p in d["pages"]):
        parts.append(_spans(d["labels"], n))
        parts.append(f"min conf {d['lowest_confidence']:.2f}")
    stages = d["exit_stages"]
    if stages:
        parts.append(f"stage {next(iter(stages))}" if len(stages) == 1 else
                     "stages " + ", ".join(f"{k} ({v})" for k, v in stages.items()))
    names = {"text_layer": "text layer", "ocr": "OCR"}
    if d["text_sources"]:
        parts.append(", ".join(f"{names.get(k, k)} {v}" for k, v in d["text_sources"].items()))
    if d["already_classified"]:
        parts.append("(from an earlier run)")
    elif d["seconds"] is not None:
        parts.append(f"{d['seconds']:.1f} s")
    return "  ".join(parts)


def _spans(spans: list[dict[str, Any]], pages: int) -> str:
    """`invoice (p1-3), letter (p4)`; just `invoice` when one label covers every page."""
    if len(spans) == 1 and (spans[0]["first_page"], spans[0]["last_page"]) == (1, pages):
        return one_line(spans[0]["label"])
    shown = [
        f"{one_line(s['label'])} (p{s['first_page']}"
        + (f"-{s['last_page']})" if s["last_page"] > s["first_page"] else ")")
        for s in spans[:SPANS_SHOWN]
    ]
    more = len(spans) - SPANS_SHOWN
    return ", ".join(shown) + (f", +{more} more" if more > 0 else "")


def _shorten(name: str, width: int) -> str:
    """`name` cut in the middle to `width` characters, keeping its start and its end (the
    distinctive part of a long file name is usually near one of them)."""
    if len(name) <= width:
        return name
    head = (width - 3) // 2
    return name[:head] + "..." + name[len(name) - (width - 3 - head):]


def render(s: RunSummary) -> str:
    failed = len(s.failed_documents)
    already = s.documents_already_classified
    notes = [f"{already} already classified"] if already else []
    notes += [f"{failed} failed"] if failed else []
    lines = [
        f"documents: {s.documents}" + (f" ({', '.join(notes)})" if notes else ""),
        f"pages: {s.pages}" + (f" ({s.pages_failed} failed)" if s.pages_failed else ""),
        "pages per class: " + (", ".join(f"{k} {v}" for k, v in s.pages_per_class.items()) or "-"),
        "exit stages: "
        + (", ".join(f"{k}: {v}" for k, v in s.exit_stage_histogram.items()) or "-"),
        "mean confidence: " + ("-" if s.mean_confidence is None else f"{s.mean_confidence:.3f}"),
        f"pages re-routed to full depth: {s.pages_rerouted}",
        *_ocr_line(s),
        _speed(s),
        f"model: {s.model_version}",
    ]
    for d in s.failed_documents:
        lines.append(f"failed: {one_line(d['error'] or d['uri'])}")
    return "\n".join(lines)


def _ocr_line(s: RunSummary) -> list[str]:
    """Of the pages that needed OCR, how many the OCR-free exit answered without it (none
    needed OCR: no line)."""
    src = s.pages_by_text_source
    avoided, ocred = src.get("ocr_avoided", 0), src.get("ocr", 0)
    if not avoided + ocred:
        return []
    return [f"OCR avoided: {avoided} of {avoided + ocred} pages that needed OCR"]


def _speed(s: RunSummary) -> str:
    """Pages per second over what this run classified; no rate when it classified nothing."""
    if s.pages_classified_this_run:
        return (f"pages/s: {s.pages_per_s:.2f} ({s.pages_classified_this_run} pages in "
                f"{s.seconds:.1f} s, {s.cpu_seconds:.1f} CPU-s)")
    already = s.documents_already_classified
    # (a symlink leaving its folder is SKIPPED anew each run: it is not new work either)
    if already and already + s.documents_by_state.get("SKIPPED", 0) >= s.documents:
        return (f"nothing new: {already} documents already classified "
                "(by an earlier run; their stored answers are shown)")
    return f"pages/s: - (no page classified in this run; {s.seconds:.1f} s)"


def register(app: typer.Typer) -> None:
    app.command("run")(run)
