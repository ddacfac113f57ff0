"""`doctriage audit summary|low-confidence|reroutes|calibration|label`: confidence audit queries
on the store (database from DOCTRIAGE_DATABASE_URL, default the embedded SQLite file)."""

from __future__ import annotations

import csv
import getpass
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from db import audit
from db.session import make_engine, migrate, session_factory, session_scope
from doctriage.commands._common import fail
from doctriage.settings import get_settings

audit_app = typer.Typer(
    help="Audit predictions: confidence, re-routes, calibration, labels.", no_args_is_help=True
)

SinceOpt = Annotated[
    str | None, typer.Option("--since", help="From this UTC date/time (ISO, inclusive).")
]
UntilOpt = Annotated[
    str | None,
    typer.Option("--until", help="Up to this UTC date/time (ISO; a bare date includes that day)."),
]
ClassOpt = Annotated[str | None, typer.Option("--class", help="Only this class (label).")]
VersionOpt = Annotated[str | None, typer.Option("--model-version", help="Only this model version.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="Print CSV.")]



def _parse_when(value: str | None, option: str, *, end: bool = False) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{option}: not an ISO date or date-time: {value!r}") from None
    if end and len(value) == 10:  # a bare date as --until means "through that day"
        when += timedelta(days=1)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _filters(
    since: str | None, until: str | None, label: str | None, version: str | None
) -> audit.AuditFilter:
    return audit.AuditFilter(
        since=_parse_when(since, "--since"),
        until=_parse_when(until, "--until", end=True),
        label=label,
        model_version=version,
    )


@contextmanager
def _session() -> Iterator[Session]:
    url = get_settings().resolved_database_url
    try:
        engine = make_engine(url)
        migrate(engine)
    except (SQLAlchemyError, OSError) as exc:
        raise fail(f"cannot open the store: {str(exc).splitlines()[0]}") from None
    try:
        with session_scope(session_factory(engine)) as s:
            yield s
    finally:
        engine.dispose()


def _emit(
    payload: dict[str, Any] | list[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    as_json: bool,
    as_csv: bool,
    text: str,
) -> None:
    if as_json and as_csv:
        raise fail("choose one of --json and --csv")
    if as_json:
        typer.echo(json.dumps(payload, indent=2, default=str))
    elif as_csv:
        _write_csv(rows)
    else:
        typer.echo(text)


def _cell(value: Any) -> Any:
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _write_csv(rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})


def _table(rows: Sequence[dict[str, Any]], empty: str) -> str:
    if not rows:
        return empty
    cols = list(rows[0])
    cells = [[str(_cell(r[c])) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


@audit_app.command("summary")
def summary_cmd(
    since: SinceOpt = None,
    until: UntilOpt = None,
    label: ClassOpt = None,
    version: VersionOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Pages, classes, exit stages, mean confidence, re-route rate; by model version and day."""
    f = _filters(since, until, label, version)
    with _session() as s:
        result = audit.summary(s, f)
    t = result["total"]
    mean = "-" if t["mean_confidence"] is None else f"{t['mean_confidence']:.3f}"
    text = (
        _table(result["groups"], "no predictions match")
        + f"\ntotal: {t['pages']} pages, re-routed {t['rerouted']} ({t['reroute_rate']:.1%}), "
        f"mean confidence {mean}, exit stages {_cell(t['exit_stages']) or '-'}"
    )
    _emit(result, result["groups"], as_json, as_csv, text)


@audit_app.command("low-confidence")
def low_confidence_cmd(
    below: Annotated[float, typer.Option("--below", help="Confidence bar (0-1).")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    label: ClassOpt = None,
    version: VersionOpt = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many pages.")
    ] = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Pages whose final answer is below --below, least confident first."""
    if not 0.0 <= below <= 1.0:
        raise fail(f"--below must be between 0 and 1, got {below}")
    f = _filters(since, until, label, version)
    with _session() as s:
        rows = audit.low_confidence(s, below, f, limit)
    _emit(
        {"filters": f.as_dict(), "below": below, "pages": rows},
        rows,
        as_json,
        as_csv,
        _table(rows, "no pages below the bar"),
    )


@audit_app.command("reroutes")
def reroutes_cmd(
    since: SinceOpt = None,
    until: UntilOpt = None,
    label: ClassOpt = None,
    version: VersionOpt = None,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Agreement of early and full-depth answers on re-routed pages, by exit stage and class."""
    f = _filters(since, until, label, version)
    with _session() as s:
        result = audit.reroutes(s, f)
    t = result["total"]
    text = _table(result["groups"], "no re-routed pages match")
    if t["pages"]:
        text += f"\ntotal: {t['pages']} re-routed pages, agreement {t['agreement']:.1%}"
    _emit(result, result["groups"], as_json, as_csv, text)


@audit_app.command("calibration")
def calibration_cmd(
    since: SinceOpt = None,
    until: UntilOpt = None,
    label: ClassOpt = None,
    version: VersionOpt = None,
    bins: Annotated[
        int, typer.Option("--bins", min=1, max=100, help="Confidence bins for ECE.")
    ] = 10,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Accuracy and ECE by exit stage on human-labelled pages."""
    f = _filters(since, until, label, version)
    with _session() as s:
        result = audit.calibration(s, f, bins)
    _emit(
        result,
        result["groups"],
        as_json,
        as_csv,
        _table(result["groups"], "no human-labelled pages match"),
    )


@audit_app.command("report")
def report_cmd(
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    label: ClassOpt = None,
    version: VersionOpt = None,
    bins: Annotated[int, typer.Option("--bins", min=1, max=100, help="Confidence bins.")] = 10,
) -> None:
    """A self-contained HTML report: exit depths, confidence per class, reliability, re-routes."""
    from db.report import build_report  # matplotlib loads only for this command

    f = _filters(since, until, label, version)
    with _session() as s:
        page = build_report(s, f, bins)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    typer.echo(f"report: {out} ({len(page) // 1024} KiB)")


@audit_app.command("label")
def label_cmd(
    page_id: Annotated[int, typer.Argument(help="Page id (see low-confidence).")],
    label: Annotated[str, typer.Argument(help="The correct class.")],
    who: Annotated[
        str | None, typer.Option("--who", help="Reviewer (default: current user).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a human label for a page."""
    reviewer = who or getpass.getuser()
    with _session() as s:
        try:
            label_id = audit.label(s, page_id, label, reviewer)
        except (LookupError, ValueError) as exc:
            raise fail(str(exc)) from None
    if as_json:
        typer.echo(
            json.dumps({"id": label_id, "page_id": page_id, "label": label, "who": reviewer})
        )
    else:
        typer.echo(f"labelled page {page_id} as {label!r} (by {reviewer})")


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
