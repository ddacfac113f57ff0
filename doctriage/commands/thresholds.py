"""`doctriage thresholds fit MODEL_DIR DATA`: choose a bundle's exit thresholds on labelled DATA
with each selection (ucb, point) and report them side by side; the bundle is not changed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import typer

from doctriage.commands._common import fail, takes_arguments
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
    help="Exit thresholds: choose them on labelled pages (a report; the bundle is unchanged).",
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


def register(app: typer.Typer) -> None:
    thresholds_app.command("fit")(fit)
    app.add_typer(thresholds_app, name="thresholds")
