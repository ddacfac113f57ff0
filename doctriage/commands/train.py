"""`doctriage train DATA --out MODEL_DIR`: train, calibrate and save an early-exit bundle.
`doctriage train [DATA] --from-store --out MODEL_DIR`: fine-tune the current bundle on the
store's human-labelled pages (and DATA, if given); written only if it is at least as accurate.

The command parses its arguments into one `BundleTrainOptions` and calls
`doctriage.bundle_training.train_bundle` with it (with --from-store: one `StoreTrainOptions`,
`doctriage.store_training.fine_tune_from_store`)."""

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

Data = Annotated[Path | None, typer.Argument(
    help="Folder with manifest.csv (path,label) or one sub-folder per class (with --from-store: "
    "optional, trained on beside the labelled pages).")]
Out = Annotated[Path, typer.Option("--out", help=(
    "Bundle directory to write (with --from-store: only if the new bundle wins; a bundle "
    "already there, e.g. the served one, is replaced)."))]
FromStore = Annotated[bool, typer.Option("--from-store", help=(
    "Fine-tune the current bundle (--model, else DOCTRIAGE_MODEL_DIR, else the default) on "
    "the store's human-labelled pages; exit 1, writing nothing, unless the new bundle is at "
    "least as accurate (full depth and early exit) on the held-out labelled pages."))]
Model = Annotated[Path | None, typer.Option("--model", help=(
    "--from-store: the bundle to fine-tune (default: the one the settings point at)."))]
HeldOut = Annotated[float, typer.Option("--held-out-fraction", help=(
    "--from-store: share of labelled documents held out to compare old and new bundles."))]
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
    out: Out
    data: Data = None
    from_store: FromStore = False
    model: Model = None
    held_out_fraction: HeldOut = 0.3
    config: Config = "small"
    backbone: Backbone = None
    placements: Placements = "every"
    raster_width: RasterWidth = 0
    raster_epochs: Annotated[int, typer.Option("--raster-epochs", help=(
        "Epochs of the raster exit alone after the joint ones (minutes on realdocs)."))] = 20
    strategy: Strategy = "joint"
    # None: the mode's default (train: 10 epochs, batch 16, lr 5e-4; --from-store: a
    # fine-tune's, doctriage.store_training.FINE_TUNE: 5 epochs, batch 8, lr 1e-4)
    epochs: Annotated[int | None, typer.Option("--epochs")] = None
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None
    lr: Annotated[float | None, typer.Option("--lr")] = None
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
    """Train the early-exit classifier, fit temperatures and thresholds, write the bundle
    (--from-store: fine-tune the current bundle on the store's human-labelled pages)."""
    from doctriage.settings import get_settings
    from doctriage.wiring import ingest_options

    args = _with_mode_defaults(args)
    _check_arguments(args)
    if args.from_store:
        _from_store(args)
        return
    if args.data is None:
        raise fail("DATA is required (or --from-store)")
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


def _with_mode_defaults(args: TrainArguments) -> TrainArguments:
    """epochs, batch size and lr left out take the mode's default: a training's or a
    fine-tune's (the numbers as in doctriage.store_training.FINE_TUNE; torch not loaded)."""
    fine = args.from_store
    defaults = {"epochs": 5 if fine else 10, "batch_size": 8 if fine else 16,
                "lr": 1e-4 if fine else 5e-4}
    return dataclasses.replace(args, **{k: v for k, v in defaults.items()
                                        if getattr(args, k) is None})


def _from_store(args: TrainArguments) -> None:
    """--from-store: build the options and the store, call fine_tune_from_store once; print
    the comparison; exit 1 with the reason when the new bundle is not written."""
    from doctriage.settings import get_settings
    from doctriage.wiring import WiringError, artifact_store, ingest_options, model_dir, store

    if not 0 < args.held_out_fraction < 1:
        raise fail("--held-out-fraction must be in (0, 1)")
    set_torch_threads(args.threads)
    settings = get_settings()
    try:
        bundle = model_dir(settings, args.model, build_default=False)
        sessions = store(settings)
        artifacts = artifact_store(settings)
    except WiringError as exc:
        raise fail(str(exc)) from None
    from classifier.bundle import BundleError
    from classifier.training import TrainOptions
    from doctriage.store_training import StoreTrainOptions, fine_tune_from_store
    from pipelines.dataset import DatasetError

    options = StoreTrainOptions(
        bundle=bundle, out_dir=args.out, data_dir=args.data,
        training=TrainOptions(**same_named(args, TrainOptions)),
        held_out_fraction=args.held_out_fraction, val_fraction=args.val_fraction,
        budget_points=args.budget, threshold_selection=args.selection, delta=args.delta,
        cache_dir=args.cache_dir or settings.home / "cache" / "pages", workers=args.workers,
        ingest=ingest_options(settings))
    try:
        result = fine_tune_from_store(options, sessions, artifacts)
    except (DatasetError, BundleError, ValueError, OSError) as exc:
        raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    typer.echo(json.dumps(result.report, indent=2))
    typer.echo(result.reason, err=True)
    if not result.promoted:
        raise typer.Exit(1)


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
