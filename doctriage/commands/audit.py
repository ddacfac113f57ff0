"""`doctriage audit summary|low-confidence|reroutes|calibration|loss|label|report`: audit queries
on the store (database from DOCTRIAGE_DATABASE_URL, default the embedded SQLite file)."""

from __future__ import annotations

import csv
import getpass
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from doctriage.commands._common import fail, parse_date, takes_arguments

if TYPE_CHECKING:  # the store's modules load SQLAlchemy: imported where a command queries
    from sqlalchemy.orm import Session

    from db import audit

# classifier.calibration.DEFAULT_BINS (the bins of the bundle's and evaluate's ECE), written out
# so that parsing arguments does not import numpy (a test checks that the two agree).
ECE_BINS = 15

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



@dataclass(frozen=True, kw_only=True)
class Filters:
    """The options every audit query shares."""

    since: SinceOpt = None
    until: UntilOpt = None
    label: ClassOpt = None
    version: VersionOpt = None

    def audit_filter(self) -> audit.AuditFilter:
        from db import audit

        return audit.AuditFilter(
            since=parse_date(self.since, "--since"),
            until=parse_date(self.until, "--until", through_day=True),
            label=self.label,
            model_version=self.version,
        )


@dataclass(frozen=True, kw_only=True)
class Output:
    as_json: JsonOpt = False
    as_csv: CsvOpt = False


@dataclass(frozen=True, kw_only=True)
class Bins:
    bins: Annotated[
        int, typer.Option("--bins", min=1, max=100, help="Confidence bins for ECE.")
    ] = ECE_BINS


@dataclass(frozen=True, kw_only=True)
class GroupedArguments(Output, Filters):
    """summary and reroutes: the filters, then the output format."""


@dataclass(frozen=True, kw_only=True)
class CalibrationArguments(Output, Bins, Filters):
    """The filters, --bins, then the output format."""


# One option each, so that a command's fields keep the help's order: a dataclass lists its
# bases' fields first, the last base's first.
@dataclass(frozen=True, kw_only=True)
class Below:
    below: Annotated[float, typer.Option("--below", help="Confidence bar (0-1).")]


@dataclass(frozen=True, kw_only=True)
class Limit:
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many pages.")
    ] = None


@dataclass(frozen=True, kw_only=True)
class ReportFile:
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")]


@dataclass(frozen=True, kw_only=True)
class LowConfidenceArguments(Output, Limit, Filters, Below):
    """--below, the filters, --limit, then the output format."""


@dataclass(frozen=True, kw_only=True)
class ReportArguments(Filters, ReportFile):
    """--out, the filters, then --bins."""

    bins: Annotated[int, typer.Option("--bins", min=1, max=100, help="Confidence bins.")] = (
        ECE_BINS
    )


@dataclass(frozen=True, kw_only=True)
class LossOptions:
    by: Annotated[
        str | None,
        typer.Option("--by", help="Also per group: day (UTC, of the early answer), class (the "
                     "early one), stage (early exit stage), source (the document's folder: "
                     "scheme, bucket and prefix), version (policy version: model version and "
                     "thresholds)."),
    ] = None
    budget: Annotated[
        float | None,
        typer.Option("--budget", help="Share of early answers allowed to differ from full "
                     "depth (default: the bundle's calibration budget in exits.json, else "
                     "0.005). Exit status 1 when the interval's lower bound is above it."),
    ] = None
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Bundle whose budget is the default (default: "
                     "DOCTRIAGE_MODEL_DIR, else the default bundle)."),
    ] = None


@dataclass(frozen=True, kw_only=True)
class LossArguments(Output, LossOptions, Filters):
    """The filters (--class: the early class), --by, --budget, --model, the output format."""


@dataclass(frozen=True)
class LabelArguments:
    page_id: Annotated[int, typer.Argument(help="Page id (see low-confidence).")]
    label: Annotated[str, typer.Argument(help="The correct class.")]
    who: Annotated[
        str | None, typer.Option("--who", help="Reviewer (default: current user).")
    ] = None
    as_json: JsonOpt = False
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Model bundle whose classes the label is checked against "
                     "(default: DOCTRIAGE_MODEL_DIR, else the default bundle)."),
    ] = None
    force: Annotated[
        bool, typer.Option("--force", help="Store a class the model does not have (warns).")
    ] = False


@contextmanager
def _session() -> Iterator[Session]:
    from sqlalchemy.exc import SQLAlchemyError

    from db.session import make_engine, migrate, session_factory, session_scope
    from doctriage.settings import get_settings

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
    output: Output,
    text: str,
) -> None:
    if output.as_json and output.as_csv:
        raise fail("choose one of --json and --csv")
    if output.as_json:
        typer.echo(json.dumps(payload, indent=2, default=str))
    elif output.as_csv:
        _write_csv(rows)
    else:
        typer.echo(text)


def _show_groups(
    query: Callable[[Session, audit.AuditFilter], dict[str, Any]],
    text: Callable[[dict[str, Any]], str],
    args: Any,
) -> None:
    """Run a grouped query on the store with the command's filters; print its result (CSV: one
    row per group). `args`: the command's arguments (filters and output options)."""
    f = args.audit_filter()
    with _session() as s:
        result = query(s, f)
    _emit(result, result["groups"], args, text(result))


def _cell(value: Any) -> Any:
    # floats as stored (full precision): CSV is for machines; the tables round
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items())
    return value


def _write_csv(rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})


def _grouped_command(name: str, query: str, text: str, doc: str) -> None:
    """An audit command that runs the grouped query `db.audit.<query>` with the shared filters
    and prints it with `_tables.<text>` (or as JSON/CSV)."""

    @audit_app.command(name, help=doc)
    @takes_arguments(GroupedArguments)
    def command(args: GroupedArguments) -> None:
        from db import audit
        from doctriage.commands import _tables

        _show_groups(getattr(audit, query), getattr(_tables, text), args)


_grouped_command("summary", "summary", "summary_text", "Pages, classes, exit stages, mean "
                 "confidence, re-route rate; by model version and day.")
@audit_app.command("low-confidence")
@takes_arguments(LowConfidenceArguments)
def low_confidence_cmd(args: LowConfidenceArguments) -> None:
    """Pages whose final answer is below --below, least confident first."""
    from db import audit

    if not 0.0 <= args.below <= 1.0:
        raise fail(f"--below must be between 0 and 1, got {args.below}")
    f = args.audit_filter()
    with _session() as s:
        rows = audit.low_confidence(s, args.below, f, args.limit)
    from doctriage.commands._tables import low_confidence_text

    payload = {"filters": f.as_dict(), "below": args.below, "pages": rows}
    _emit(payload, rows, args, low_confidence_text(rows))


_grouped_command("reroutes", "reroutes", "reroutes_text", "Agreement of early and full-depth "
                 "answers on re-routed pages, by exit stage and class.")


@audit_app.command("calibration")
@takes_arguments(CalibrationArguments)
def calibration_cmd(args: CalibrationArguments) -> None:
    """Accuracy and ECE by exit stage on human-labelled pages."""
    from doctriage.commands._tables import calibration_text
    from doctriage.reporting.calibration import calibration

    _show_groups(lambda s, f: calibration(s, f, args.bins), calibration_text, args)


@audit_app.command("report")
@takes_arguments(ReportArguments)
def report_cmd(args: ReportArguments) -> None:
    """A self-contained HTML report: exit depths, confidence per class, reliability, re-routes."""
    out = args.out
    # A mistyped folder is an error, not a new tree of folders: checked before any work.
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise fail(f"cannot write {out}: the folder {folder} does not exist")
    from doctriage.reporting.html_report import build_report  # matplotlib: only here

    f = args.audit_filter()
    with _session() as s:
        page = build_report(s, f, args.bins)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    typer.echo(f"report: {out} ({len(page) // 1024} KiB)")


@audit_app.command("loss")
@takes_arguments(LossArguments)
def loss_cmd(args: LossArguments) -> None:
    """What early exit costs: the share of early answers that full depth answers differently,
    estimated from the audit sample alone (pages drawn whatever their confidence; low-confidence
    re-routes are left out, they are biased), with a 95% Wilson interval. --class and
    --model-version filter the early answer. Exit status 1 when the interval's lower bound is
    above the budget."""
    from db import audit_loss
    from doctriage.commands._tables import loss_text

    if args.by is not None and args.by not in audit_loss.GROUPINGS:
        raise fail(f"--by {args.by!r}: one of {', '.join(audit_loss.GROUPINGS)}")
    if args.budget is not None and not 0.0 <= args.budget <= 1.0:
        raise fail(f"--budget must be between 0 and 1, got {args.budget}")
    budget = args.budget if args.budget is not None else _bundle_budget(args.model)
    f = args.audit_filter()
    with _session() as s:
        result = audit_loss.loss(s, f, args.by)
    over = audit_loss.over_budget(result["total"], budget)
    result = {**result, "budget": budget, "over_budget": over}
    rows = result["groups"] if args.by else [result["total"]]
    _emit(result, rows, args, loss_text(result))
    if over:
        t = result["total"]
        typer.echo(f"over budget: estimated loss {t['estimate']:.2%}, lower bound "
                   f"{t['lower']:.2%} > budget {budget:.2%} ({t['pages']} audit-sampled pages)",
                   err=True)
        raise typer.Exit(1)


def _bundle_budget(model: Path | None) -> float:
    """The disagreement budget the bundle's thresholds were searched under (exits.json
    metadata.calibration.budget), else audit_loss.DEFAULT_BUDGET."""
    from db.audit_loss import DEFAULT_BUDGET

    bundle = _bundle_exits(model)
    if bundle is None:
        return DEFAULT_BUDGET
    calibration = bundle[1].get("metadata", {}).get("calibration") or {}
    budget = calibration.get("budget") if isinstance(calibration, dict) else None
    return float(budget) if isinstance(budget, int | float) else DEFAULT_BUDGET


@audit_app.command("label")
@takes_arguments(LabelArguments)
def label_cmd(args: LabelArguments) -> None:
    """Record a human label for a page."""
    from db import audit

    reviewer = args.who or getpass.getuser()
    with _session() as s:
        try:
            label_id = audit.label(s, args.page_id, args.label, reviewer)
        except (LookupError, ValueError) as exc:
            raise fail(str(exc)) from None
        # After the page check (a missing page is said first); a refusal here raises out of
        # the transaction, which rolls the label back.
        _check_class(args.label.strip(), args.model, args.force)
    if args.as_json:
        typer.echo(json.dumps(
            {"id": label_id, "page_id": args.page_id, "label": args.label, "who": reviewer}))
    else:
        typer.echo(f"labelled page {args.page_id} as {args.label!r} (by {reviewer})")


def _check_class(label: str, model: Path | None, force: bool) -> None:
    """A label outside the model's classes is most often a typo, and a human label the model
    can never give skews calibration: refuse it unless --force (then store it, with a warning)."""
    bundle = _bundle_classes(model)
    if bundle is None:
        typer.echo(f"warning: no model bundle to check {label!r} against (pass --model DIR)",
                   err=True)
        return
    folder, classes = bundle
    if not label or label in classes:
        return  # an empty label is refused by audit.label
    import difflib

    close = difflib.get_close_matches(label, classes, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    problem = f"{label!r} is not a class of the model in {folder} ({', '.join(classes)})"
    if not force:
        raise fail(f"{problem}; {hint}--force stores it anyway")
    typer.echo(f"warning: {problem}; stored anyway (--force)", err=True)


def _bundle_classes(model: Path | None) -> tuple[Path, list[str]] | None:
    """(folder, class names) of the bundle --model, DOCTRIAGE_MODEL_DIR or the default gives,
    read from its exits.json (no torch, never builds the default); None if there is none."""
    bundle = _bundle_exits(model)
    if bundle is None:
        return None
    folder, exits = bundle
    try:
        return folder, [str(n) for n in exits["label_names"]]
    except (KeyError, TypeError):
        raise fail(f"{folder}: not a model bundle (unreadable exits.json)") from None


def _bundle_exits(model: Path | None) -> tuple[Path, dict[str, Any]] | None:
    """(folder, exits.json) of the bundle --model, DOCTRIAGE_MODEL_DIR or the default gives;
    None if there is none."""
    from doctriage import wiring
    from doctriage.settings import get_settings

    settings = get_settings()
    chosen = model or settings.model_dir
    if chosen is not None:
        try:
            folder: Path | None = wiring.bundle_folder(chosen)  # worded as every command words it
        except wiring.WiringError as exc:
            raise fail(str(exc)) from None
    else:
        from doctriage.default_model import existing_default_bundle

        folder = existing_default_bundle(settings)
    if folder is None:
        return None
    try:
        exits = json.loads((folder / "exits.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise fail(f"{folder}: not a model bundle (unreadable exits.json)") from None
    if not isinstance(exits, dict):
        raise fail(f"{folder}: not a model bundle (unreadable exits.json)")
    return folder, exits


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
