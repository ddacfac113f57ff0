"""`doctriage backlog SOURCE [--since DATE] [--until DATE] [--reclassify-below CONF]
[--model-version V] [--limit N]`: register what SOURCE holds that the store does not know yet,
then enqueue everything under it that is not classified, classified by another model version,
or below a confidence. Paced so live drops are not starved; resumable; a second run right after
enqueues nothing. With no broker configured the work runs in this process."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from doctriage.commands._common import fail, parse_date, quiet_workers_logs, takes_arguments


@dataclass(frozen=True)
class BacklogArguments:
    source: Annotated[str, typer.Argument(help="s3://BUCKET/PREFIX or a local folder.")]
    since: Annotated[str | None, typer.Option(help="Documents received on/after DATE.")] = None
    until: Annotated[str | None, typer.Option(help="Documents received before DATE.")] = None
    reclassify_below: Annotated[float | None, typer.Option(
        "--reclassify-below", help="Re-route early answers below this confidence to full depth."
    )] = None
    model_version: Annotated[str | None, typer.Option(
        "--model-version",
        help="Reclassify pages with no prediction by this version (default: the current model's)."
    )] = None
    limit: Annotated[int | None, typer.Option(help="At most N documents this run.")] = None
    max_in_queue: Annotated[int, typer.Option(
        help="Backlog messages allowed ahead of live work in a queue.")] = 64
    rate: Annotated[float | None, typer.Option(help="At most this many messages/s.")] = None
    scan: Annotated[bool, typer.Option(help="List SOURCE for unregistered objects first.")] = True
    model: Annotated[Path | None, typer.Option("--model", help="Model bundle (embedded).")] = None
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False


@quiet_workers_logs
@takes_arguments(BacklogArguments)
def backlog(args: BacklogArguments) -> None:
    """Find and enqueue the backlog of SOURCE."""
    start, end = parse_date(args.since, "--since"), parse_date(args.until, "--until")
    if start and end and start >= end:
        raise fail("--since must be before --until")
    if args.reclassify_below is not None and not 0.0 < args.reclassify_below <= 1.0:
        raise fail("--reclassify-below must be in (0, 1]")
    if args.limit is not None and args.limit < 1:
        raise fail("--limit must be at least 1")
    if not args.source.startswith("s3://") and not Path(args.source).exists():
        raise fail(f"no such folder: {args.source}")
    from doctriage.jobs import JobError
    from doctriage.jobs.backlog import BacklogOptions, run_backlog_job
    from doctriage.settings import get_settings

    opts = BacklogOptions(args.source, start, end, args.reclassify_below, args.model_version,
                          args.limit, args.max_in_queue, args.rate, args.scan, args.model)
    try:
        out = run_backlog_job(get_settings(), opts)
    except JobError as exc:
        raise fail(str(exc)) from None
    typer.echo(json.dumps(out, indent=2) if args.as_json else _line(out))


def _line(out: dict[str, Any]) -> str:
    return (
        f"backlog {out['source']}: {out['registered']} new objects registered "
        f"({out['skipped']} skipped); "
        f"{out['documents']} documents with work: {out['ingest']} to ingest, "
        f"{out['classify_pages']} pages to classify, {out['full_depth_pages']} to full depth"
        f"{_ocr_first(out)} "
        f"({'complete' if out['complete'] else 'stopped at --limit; the next run resumes'})"
    )


def _ocr_first(out: dict[str, Any]) -> str:
    n = out.get("ocr_then_full_depth_pages", 0)
    return f" (and {n} answered without OCR: OCR, then full depth)" if n else ""


def register(app: typer.Typer) -> None:
    app.command("backlog")(backlog)
