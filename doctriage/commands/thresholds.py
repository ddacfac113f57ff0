"""`doctriage thresholds fit MODEL_DIR DATA`: choose a bundle's exit thresholds on labelled DATA
with each selection (ucb, point) and report them side by side; the bundle is not changed.
`doctriage thresholds tune`: re-tune a model version's thresholds from the store's audit sample,
and with --apply store them as its policy in force (workers pick it up)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from doctriage.commands._common import fail, parse_date, takes_arguments
from doctriage.commands._options import (
    AsJson,
    BatchSize,
    Budget,
    CacheDir,
    Delta,
    LabelledData,
    ModelDir,
    Split,
    Threads,
    Workers,
)
from doctriage.commands.evaluate import evaluation_options, one_line_errors

thresholds_app = typer.Typer(
    help="Exit thresholds: choose them on labelled pages (fit: a report; the bundle is "
    "unchanged), or re-tune them from the audit sample in the store (tune, --apply).",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class FitArguments:
    model_dir: ModelDir
    data: LabelledData
    as_json: AsJson = False
    budget: Budget = 0.5
    delta: Delta = 0.1
    split: Split = "all"
    batch_size: BatchSize = 16
    cache_dir: CacheDir = None
    workers: Workers = 1
    threads: Threads = None


@takes_arguments(FitArguments)
def fit(args: FitArguments) -> None:
    """Choose exit thresholds on DATA by each selection (ucb: an upper confidence bound on the
    early-vs-full disagreement holds the budget; point: the estimate does) and report them."""
    if not 0 < args.delta < 1:
        raise fail("--delta must be in (0, 1)")
    if args.budget < 0:
        raise fail("--budget must be >= 0")
    data = evaluation_options(args)
    from doctriage.bundle_thresholds import FitOptions, fit_thresholds

    with one_line_errors():
        report = fit_thresholds(args.model_dir, args.data,
                                FitOptions(args.budget, args.delta, data))
    typer.echo(json.dumps(report, indent=2) if args.as_json else render(report))


def render(report: dict[str, Any]) -> str:
    lines = [f"pages {report['pages']}  full-depth accuracy "
             f"{100 * report['full_depth_accuracy']:.2f}%  budget {report['budget_points']:g} "
             f"points  delta {report['delta']:g}"]
    for name, c in report["choices"].items():
        lines.append(
            f"{name:>5}: thresholds {', '.join(f'{t:.4g}' for t in c['thresholds'][:-1])}  "
            f"disagreement {100 * c['validation_disagreement']:.2f}% "
            f"(upper bound {100 * c['validation_disagreement_ucb']:.2f}%)  "
            f"mean exit stage {c['mean_exit_stage']:.2f}  FLOPs ratio {c['flops_ratio']:.3f}"
            + ("  [no early exit]" if c["fallback"] else "")
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class TuneArguments:
    budget: Annotated[float | None, typer.Option("--budget", help=(
        "Allowed share of audit-sampled pages whose early answer differs from full depth, in "
        "points (default: the budget the policy in force was chosen under, else the bundle's, "
        "else 0.5)."))] = None
    delta: Annotated[float | None, typer.Option("--delta", help=(
        "The bound on disagreement holds with confidence 1 - delta (default: as the policy in "
        "force, else 0.1)."))] = None
    model: Annotated[Path | None, typer.Option("--model", help=(
        "Bundle whose thresholds are tuned (default: DOCTRIAGE_MODEL_DIR, else the default "
        "bundle)."))] = None
    model_version: Annotated[str | None, typer.Option("--model-version", help=(
        "Check that the bundle is this model version (the sample is always the bundle's)."))
    ] = None
    since: Annotated[str | None, typer.Option("--since", help=(
        "Audit pages answered from this UTC date or time on (YYYY-MM-DD or ISO 8601)."))] = None
    apply: Annotated[bool, typer.Option("--apply", help=(
        "Store the proposal as the model version's policy in force; running workers take it "
        "up within DOCTRIAGE_POLICY_POLL_S."))] = False
    notes: Annotated[str | None, typer.Option("--notes", help="Stored with the policy.")
    ] = None
    as_json: AsJson = False


@takes_arguments(TuneArguments)
def tune(args: TuneArguments) -> None:
    """Re-tune exit thresholds from the audit sample in the store (every exit's answer on each
    sampled page's full-depth row): the cheapest thresholds whose upper confidence bound on
    early-vs-full disagreement holds the budget, with the estimated loss and mean layers before
    (the policy in force) and after. Exit status 1, one line, when the sample cannot decide
    (too few pages, or nothing holds the budget); nothing is proposed then."""
    if args.delta is not None and not 0 < args.delta < 1:
        raise fail("--delta must be in (0, 1)")
    if args.budget is not None and not 0 < args.budget <= 100:
        raise fail("--budget must be in (0, 100] points")
    since = parse_date(args.since, "--since")
    from doctriage import policy_tuning, wiring
    from doctriage.settings import get_settings

    settings = get_settings()
    try:
        sessions = wiring.store(settings)
        model = wiring.load_model(settings, args.model, build_default=False)
    except wiring.WiringError as exc:
        raise fail(str(exc)) from None
    if args.model_version is not None and args.model_version != str(model.version):
        raise fail(f"--model-version {args.model_version!r}: the bundle is {model.version} "
                   "(name its bundle with --model)")
    opts = policy_tuning.TuneOptions(
        budget=args.budget / 100 if args.budget is not None else None, delta=args.delta,
        since=since, apply=args.apply, notes=args.notes)
    try:
        report = policy_tuning.tune(sessions, model, opts)
    except policy_tuning.TuneRefused as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(report, indent=2, default=str) if args.as_json else render_tune(report))


def _policy_line(name: str, fig: dict[str, Any]) -> str:
    if not fig.get("replayed"):
        obs = fig["observed"]
        return (f"{name}: {fig['policy_version']}  (not replayable: {fig['policy'].get('name')})"
                f"  stored early answers differ {obs['estimate']:.2%}")
    loss = fig["loss"]
    return (f"{name}: {fig['policy_version']}  thresholds "
            f"{', '.join(f'{t:.4g}' for t in fig['thresholds'][:-1])}\n"
            f"    estimated loss {loss['estimate']:.2%} (95% {loss['lower']:.2%}-"
            f"{loss['upper']:.2%}; bound {fig['disagreement_ucb']:.2%})  mean layers "
            f"{fig['mean_layers']:.2f}  FLOPs ratio {fig['flops_ratio']:.3f}")


def render_tune(report: dict[str, Any]) -> str:
    lines = [f"{report['pages']} audit-sampled pages of {report['model_version']}  budget "
             f"{report['budget']:.2%}  delta {report['delta']:g}",
             _policy_line("current", report["current"]),
             _policy_line("proposed", report["proposed"])]
    applied = report.get("applied")
    if applied is not None:
        lines.append(f"applied: policy {applied['policy_id']} stored, in force for "
                     f"{report['model_version']}" if applied["stored"]
                     else f"not stored: {applied['reason']}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    thresholds_app.command("fit")(fit)
    thresholds_app.command("tune")(tune)
    app.add_typer(thresholds_app, name="thresholds")
