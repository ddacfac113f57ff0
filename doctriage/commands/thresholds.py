"""`doctriage thresholds fit MODEL_DIR DATA`: choose a bundle's exit thresholds on labelled DATA
with each selection (ucb, point) and report them side by side; the bundle is not changed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import typer

from doctriage.commands._common import fail, set_torch_threads, takes_arguments
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
    from doctriage import wiring
    from doctriage.settings import get_settings

    if args.split not in ("all", "val", "train"):
        raise fail(f"--split must be all, val or train, not {args.split!r}")
    if not 0 < args.delta < 1:
        raise fail("--delta must be in (0, 1)")
    if args.budget < 0 or args.batch_size < 1 or args.workers < 1:
        raise fail("--budget must be >= 0, --batch-size and --workers at least 1")
    try:
        wiring.bundle_folder(args.model_dir)  # worded as run's --model; before torch loads
    except wiring.WiringError as exc:
        raise fail(str(exc)) from None
    settings = get_settings()
    set_torch_threads(args.threads)
    from classifier.bundle import BundleError
    from doctriage.bundle_evaluation import EvaluationOptions
    from doctriage.bundle_thresholds import FitOptions, fit_thresholds
    from pipelines.dataset import DatasetError

    data = EvaluationOptions(
        split=args.split, batch_size=args.batch_size,
        cache_dir=args.cache_dir or settings.home / "cache" / "pages", workers=args.workers,
        device=settings.device, ingest=wiring.ingest_options(settings),
    )
    try:
        report = fit_thresholds(args.model_dir, args.data,
                                FitOptions(args.budget, args.delta, data))
    except (DatasetError, BundleError, ValueError, OSError) as exc:
        raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
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
