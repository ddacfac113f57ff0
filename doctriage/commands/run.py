"""`doctriage run PATH... [--json] [--model DIR]`: classify documents in-process (no broker),
store everything in the SQLite store under DOCTRIAGE_HOME, and print a summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from doctriage import wiring
from doctriage.commands._common import fail, quiet_workers_logs
from doctriage.s3_wiring import s3_options
from doctriage.settings import get_settings
from pipelines.errors import one_line
from pipelines.sources_factory import source_for
from workers.embedded import RunSummary, run_embedded


@quiet_workers_logs
def run(
    paths: Annotated[list[str], typer.Argument(
        help="PDF/TIFF/PNG/JPEG files or folders, or s3://BUCKET/PREFIX.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Model bundle folder (default: the default bundle)."),
    ] = None,
) -> None:
    """Classify every page of PATH... in this process and summarise the results."""
    settings = get_settings()
    try:
        # folders, files, S3 prefixes
        source = source_for(paths, s3_options(settings), follow_symlinks=settings.follow_symlinks)
        files = source.files()
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    if not files:
        raise fail("no documents found (looked for .pdf .png .jpg .jpeg .tif .tiff)")
    try:
        ctx = wiring.step_context(settings)  # the store first: a bad one fails in a second
        runtime = wiring.classify_runtime(settings, model)
    except wiring.WiringError as exc:
        raise fail(str(exc)) from None
    with (
        tqdm(total=len(files), unit="doc", desc="documents", leave=False) as docs_bar,
        tqdm(unit="page", desc="pages", leave=False) as pages_bar,
    ):
        def progress(event: str, n: int) -> None:
            (docs_bar if event == "document" else pages_bar).update(n)

        summary = run_embedded(ctx, runtime, source, progress=progress)
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        typer.echo(render(summary))


def render(s: RunSummary) -> str:
    failed = len(s.failed_documents)
    lines = [
        f"documents: {s.documents}" + (f" ({failed} failed)" if failed else ""),
        f"pages: {s.pages}" + (f" ({s.pages_failed} failed)" if s.pages_failed else ""),
        "pages per class: " + (", ".join(f"{k} {v}" for k, v in s.pages_per_class.items()) or "-"),
        "exit stages: "
        + (", ".join(f"{k}: {v}" for k, v in s.exit_stage_histogram.items()) or "-"),
        "mean confidence: " + ("-" if s.mean_confidence is None else f"{s.mean_confidence:.3f}"),
        f"pages re-routed to full depth: {s.pages_rerouted}",
        f"pages/s: {s.pages_per_s:.2f} ({s.pages_classified_this_run} pages in {s.seconds:.1f} s, "
        f"{s.cpu_seconds:.1f} CPU-s)",
        f"model: {s.model_version}",
    ]
    for d in s.failed_documents:
        lines.append(f"failed: {one_line(d['error'] or d['uri'])}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
