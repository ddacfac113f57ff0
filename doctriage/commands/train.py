"""`doctriage train DATA --out MODEL_DIR`: train, calibrate and save an early-exit bundle.

The command parses its arguments into one `BundleTrainOptions` and calls
`doctriage.bundle_training.train_bundle` with it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from doctriage.commands._common import fail, set_torch_threads, takes_arguments
from doctriage.commands._options import Budget, CacheDir, Delta, Threads, Workers

if TYPE_CHECKING:  # loads torch: imported in train() once the arguments are known to be usable
    from doctriage.bundle_training import BundleTrainOptions

Data = Annotated[Path, typer.Argument(
    help="Folder with manifest.csv (path,label) or one sub-folder per class.")]
Out = Annotated[Path, typer.Option("--out", help="Bundle directory to write.")]
Config = Annotated[str, typer.Option("--config", help="Named backbone size: tiny, small, base.")]
Backbone = Annotated[Path | None, typer.Option("--backbone", help=(
    "A LayoutLMv3 checkpoint directory (save_pretrained layout) instead of --config."))]
Placements = Annotated[str, typer.Option("--placements", help=(
    "Exit layers: every, every_other, quarter, final, or e.g. 1,3,6."))]
Strategy = Annotated[str, typer.Option("--strategy", help="joint or two-stage.")]
MaxMinutes = Annotated[float | None, typer.Option("--max-minutes", help=(
    "Stop training after this many minutes (calibration still runs)."))]
ValFraction = Annotated[float, typer.Option("--val-fraction", help=(
    "Share of documents (per class) held out for validation."))]
Selection = Annotated[str, typer.Option("--selection", help=(
    "Threshold selection: ucb (an upper confidence bound holds the budget) or point "
    "(the validation estimate does)."))]
Resume = Annotated[bool, typer.Option("--resume", help=(
    "Continue from MODEL_DIR/checkpoint (last finished epoch)."))]
Precision = Annotated[str, typer.Option("--precision", help=(
    "fp32, bf16 (forward passes under CPU autocast; ~1.35x faster steps where the CPU has "
    "AMX/AVX512-BF16) or auto (bf16 where the CPU has them)."))]
TextDropout = Annotated[float, typer.Option("--text-dropout", help=(
    "Share of training pages read without their words in each batch: teaches the OCR-free "
    "exit (a page that needs OCR answered from its raster); 0 (the default): none. On realdocs "
    "the from-scratch backbone has not learned it yet (README, Results)."))]
RasterWidth = Annotated[int, typer.Option("--raster-exit", help=(
    "Channels of the raster exit's first block: a small CNN over the page raster that answers "
    "scanned pages before OCR (the OCR-free exit), trained with the other exits. 0: none."))]
ScanCopies = Annotated[float, typer.Option("--scan-copies", help=(
    "Share of born-digital training PDFs that also train as simulated scans (rendered, "
    "skewed, blurred, speckled, JPEG'd, then OCR'd; cached like any page). 0 turns it off."))]


@dataclass(frozen=True)
class TrainArguments:
    data: Data
    out: Out
    config: Config = "small"
    backbone: Backbone = None
    placements: Placements = "every"
    raster_width: RasterWidth = 0
    raster_epochs: Annotated[int, typer.Option("--raster-epochs", help=(
        "Epochs of the raster exit alone after the joint ones (minutes on realdocs)."))] = 20
    strategy: Strategy = "joint"
    epochs: Annotated[int, typer.Option("--epochs")] = 10
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16
    lr: Annotated[float, typer.Option("--lr")] = 5e-4
    max_minutes: MaxMinutes = None
    seed: Annotated[int, typer.Option("--seed")] = 0
    val_fraction: ValFraction = 0.2
    test_fraction: Annotated[float, typer.Option("--test-fraction", help=(
        "Share of documents (per class) held out of training and threshold choice, for "
        "`evaluate --split test`."))] = 0.0
    budget: Budget = 0.5
    selection: Selection = "ucb"
    delta: Delta = 0.1
    resume: Resume = False
    cache_dir: CacheDir = None
    workers: Workers = 1
    scan_copies: ScanCopies = 1.0
    text_dropout: TextDropout = 0.0
    precision: Precision = "auto"
    threads: Threads = None


@takes_arguments(TrainArguments)
def train(args: TrainArguments) -> None:
    """Train the early-exit classifier, fit temperatures and thresholds, write the bundle."""
    from doctriage.settings import get_settings
    from doctriage.wiring import ingest_options

    _check_arguments(args)
    if args.resume and not (args.out / "checkpoint" / "train_state.json").exists():
        raise fail(f"--resume: no checkpoint in {args.out / 'checkpoint'}")
    set_torch_threads(args.threads)
    # torch and transformers load only now, after the arguments are known to be usable
    from classifier.training import TrainOptions
    from doctriage.bundle_training import BundleTrainOptions

    settings = get_settings()
    options = BundleTrainOptions(
        data_dir=args.data,
        out_dir=args.out,
        training=TrainOptions(**same_named(args, TrainOptions)),
        budget_points=args.budget,
        threshold_selection=args.selection,
        cache_dir=args.cache_dir or settings.home / "cache" / "pages",
        ingest=ingest_options(settings),
        **same_named(args, BundleTrainOptions),
    )
    if settings.malloc_tuning:
        from workers.allocator import tune_malloc

        tune_malloc()
    typer.echo(json.dumps(summary(run_training(options)), indent=2))


def same_named(args: TrainArguments, options: type) -> dict[str, Any]:
    """The arguments that an options dataclass takes under the same name (the command's flags
    are named after the options they set)."""
    wanted = {f.name for f in dataclasses.fields(options)} - {"cache_dir"}  # has a default here
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name in wanted}


# One line per bad argument (exit 2), checked before torch loads.
_CHOICES = {"strategy": ("joint", "two-stage"), "selection": ("ucb", "point"),
            "precision": ("fp32", "bf16", "auto")}


def _check_arguments(args: TrainArguments) -> None:
    for name, allowed in _CHOICES.items():
        if getattr(args, name) not in allowed:
            raise fail(f"--{name} must be {' or '.join(allowed)}, not {getattr(args, name)!r}")
    if not 0 < args.delta < 1:
        raise fail("--delta must be in (0, 1)")
    if args.epochs < 1 or args.batch_size < 1 or args.workers < 1:
        raise fail("--epochs, --batch-size and --workers must be at least 1")
    if args.raster_epochs < 0:
        raise fail(f"--raster-epochs must be 0 or more, got {args.raster_epochs}")
    if args.raster_width < 0:
        raise fail(f"--raster-exit must be 0 (none) or a channel count, got {args.raster_width}")
    if not (0 <= args.test_fraction < 1 and 0 <= args.val_fraction < 1
            and args.test_fraction + args.val_fraction < 1):
        raise fail("--val-fraction and --test-fraction must be in [0, 1) and sum below 1")
    for name, share in (("--scan-copies", args.scan_copies),
                        ("--text-dropout", args.text_dropout)):
        if not 0.0 <= share <= 1.0:
            raise fail(f"{name} must be between 0 and 1, got {share}")


def run_training(options: BundleTrainOptions) -> dict[str, Any]:
    """train_bundle, with what can go wrong in the data or the bundle as one line (exit 2)."""
    from classifier.bundle import BundleError
    from doctriage.bundle_training import train_bundle
    from pipelines.dataset import DatasetError

    try:
        return train_bundle(options)
    except (DatasetError, BundleError, ValueError, OSError) as exc:
        raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the command prints of the training report."""
    cal = report["calibration"]
    return {
        "bundle": report["bundle"],
        "version": report["version"],
        "train_pages": report["train_pages"],
        "val_pages": report["val_pages"],
        "epochs_done": report["training"]["epochs_done"],
        "train_seconds": report["training"]["train_seconds"],
        "val_full_depth_accuracy": cal.get("full_depth_val_accuracy"),
        "val_early_exit_accuracy": cal.get("early_exit_val_accuracy"),
        "val_flops_ratio": cal.get("val_flops_ratio"),
        "threshold_selection": cal.get("threshold_selection"),
    }


def register(app: typer.Typer) -> None:
    app.command("train")(train)
