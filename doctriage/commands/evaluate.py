"""`doctriage evaluate MODEL_DIR DATA [--json]`: accuracy, calibration and early-exit speed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from doctriage.commands._common import fail, set_torch_threads, takes_arguments
from doctriage.commands._options import (
    AsJson,
    BatchSize,
    CacheDir,
    LabelledData,
    ModelDir,
    Split,
    Threads,
    Workers,
)

if TYPE_CHECKING:  # torch loads with it: imported once the arguments pass
    from doctriage.bundle_evaluation import EvaluationOptions


@dataclass(frozen=True)
class EvaluateArguments:
    model_dir: ModelDir
    data: LabelledData
    as_json: AsJson = False
    out: Annotated[
        Path | None, typer.Option("--out", help=(
            "Folder for report.json and the PNG figures (trade-off, reliability, confusion)."))
    ] = None
    split: Split = "all"
    batch_size: BatchSize = 16
    device: Annotated[
        str | None, typer.Option("--device", help="cpu or cuda (default from settings).")
    ] = None
    cache_dir: CacheDir = None
    workers: Workers = 1
    scan_copies: Annotated[bool, typer.Option(
        "--scan-copies", help="Also score simulated scans (rendered, damaged, OCR'd) of the "
        "born-digital PDFs evaluated, beside their originals.")] = False
    threads: Threads = None


@takes_arguments(EvaluateArguments)
def evaluate(args: EvaluateArguments) -> None:
    """Evaluate a bundle: per-exit accuracy/ECE, the early-exit policy, measured speed-up."""
    opts = evaluation_options(args, out_dir=args.out, device=args.device,
                              scan_copies=args.scan_copies)
    from doctriage.bundle_evaluation import evaluate_bundle

    with one_line_errors():
        report = evaluate_bundle(args.model_dir, args.data, opts)
    if args.out is not None:
        (args.out / "report.json").write_text(json.dumps(report, indent=2))
    typer.echo(json.dumps(report, indent=2) if args.as_json else render(report))


def evaluation_options(args: Any, **extra: Any) -> EvaluationOptions:
    """The bundle, split and page-reading options that `evaluate` and `thresholds fit` share,
    checked (a bad one is one line, exit 2) before torch loads. `extra`: EvaluationOptions
    fields of the command's own (device None: the settings')."""
    from doctriage import wiring
    from doctriage.settings import get_settings

    if args.split not in ("all", "val", "train", "test"):
        raise fail(f"--split must be all, val, train or test, not {args.split!r}")
    if args.batch_size < 1 or args.workers < 1:
        raise fail("--batch-size and --workers must be at least 1")
    try:
        wiring.bundle_folder(args.model_dir)  # worded as run's --model; before torch loads
    except wiring.WiringError as exc:
        raise fail(str(exc)) from None
    settings = get_settings()
    set_torch_threads(args.threads)
    from doctriage.bundle_evaluation import EvaluationOptions

    extra["device"] = extra.get("device") or settings.device
    return EvaluationOptions(
        split=args.split, batch_size=args.batch_size,
        cache_dir=args.cache_dir or settings.home / "cache" / "pages", workers=args.workers,
        ingest=wiring.ingest_options(settings), **extra)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """What can go wrong in DATA or the bundle, as one line and exit 2."""
    from classifier.bundle import BundleError
    from pipelines.dataset import DatasetError

    try:
        yield
    except (DatasetError, BundleError, ValueError, OSError) as exc:
        raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def render(report: dict[str, Any]) -> str:
    """The report for a terminal: full depth, each exit, then the early-exit policy."""
    ee = report["early_exit"]
    lines = [f"pages {report['pages']}  "
             f"full-depth accuracy {100 * report['full_depth']['accuracy']:.2f}%"]
    lines += [
        f"  exit {e['stage']} (layer {e['layer']}): accuracy {100 * e['accuracy']:.2f}%  "
        f"ECE {e['ece_raw']:.3f} -> {e['ece_calibrated']:.3f}"
        for e in report["exits"]
    ]
    lines.append(
        f"early exit ({ee['policy']['name']}): accuracy {100 * ee['accuracy']:.2f}%  "
        f"mean layers {ee['mean_layers']:.2f}  FLOPs ratio {ee['flops_ratio']:.3f}  "
        f"wall speed-up {ee['speedup_wall']:.2f}x ({ee['engine'].replace('_', ' ')})"
    )
    for name in ("text_source", "source"):
        groups = report.get("breakdowns", {}).get(name, {})
        lines.append(f"by {name.replace('_', ' ')}: " + "  ".join(
            f"{value} {100 * g['full_depth_accuracy']:.2f}% ({g['pages']} pages)"
            for value, g in groups.items()))
    free = report.get("ocr_free") or {}
    if free.get("pages"):
        lines.append(
            f"OCR-free exit on {free['pages']} pages that needed OCR: OCR avoided on "
            f"{100 * free['ocr_avoided_share']:.1f}%, accuracy "
            f"{100 * free['accuracy_with_ocr_free_exit']:.2f}% against "
            f"{100 * free['full_depth_accuracy_with_ocr']:.2f}% with OCR on every one"
            + ("" if free["exit"] else " (this bundle has no OCR-free exit)"))
    scans = report.get("scan_copies")
    if scans and scans.get("scanned"):
        lines.append(
            f"simulated scans of {scans['documents']} born-digital documents: full-depth "
            f"accuracy {100 * scans['scanned']['full_depth_accuracy']:.2f}% against "
            f"{100 * scans['originals']['full_depth_accuracy']:.2f}% on the originals"
        )
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
