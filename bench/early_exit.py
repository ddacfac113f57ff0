"""Early exit vs full depth on labelled documents: accuracy of both, measured wall-clock
speed-up through the stage batcher that serves (same pages, same batch size, same run), FLOPs
ratio, mean exit layer.

    python -m bench.early_exit MODEL_DIR DATA [--split val] [--device cuda]
        [--batch-size 16] [--rounds 2] [--threads N] [--out FILE]

Prints JSON and writes bench/results/early_exit.json (its plots beside it, in early_exit_plots/).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from bench import harness
from classifier.bundle import BundleError
from doctriage.bundle_evaluation import EvaluationOptions, evaluate_bundle
from pipelines.dataset import DatasetError


def main() -> int:
    ap = harness.parser(__doc__, "early_exit", harness.Common(device=True, model="positional"))
    ap.add_argument("data", type=Path)
    ap.add_argument("--split", default="all", choices=["all", "val", "train", "test"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="timing passes over all pages")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".doctriage/cache/pages")
    args = ap.parse_args()
    harness.resolve_model(args.model)
    run = harness.start(args)
    started = time.time()
    try:
        report = evaluate_bundle(args.model, args.data, EvaluationOptions(
            split=args.split,
            batch_size=args.batch_size,
            device=args.device,
            cache_dir=args.cache_dir,
            timing_rounds=args.rounds,
            out_dir=args.out.parent / "early_exit_plots",
        ))
    except (BundleError, DatasetError, ValueError) as exc:
        raise harness.BadInput(str(exc)) from None
    ee = report["early_exit"]
    result = {
        "model": str(args.model),
        "model_version": report["model_version"],
        "data": str(args.data),
        "split": args.split,
        "pages": report["pages"],
        "documents": report["documents"],
        "device": args.device,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "machine": platform.node(),
        "malloc": run.malloc,
        "accuracy_full_depth": report["full_depth"]["accuracy"],
        "accuracy_early_exit": ee["accuracy"],
        "accuracy_drop_points": ee["accuracy_drop_points"],
        "speedup_wall": ee["speedup_wall"],
        "speedup_engine": ee["engine"],  # what timed it: the stage batcher, as served
        "flops_ratio": ee["flops_ratio"],
        "ideal_speedup": ee["ideal_speedup"],
        "mean_exit_layer": ee["mean_layers"],
        "full_layers": report["full_depth"]["layers"],
        "exit_counts": ee["exit_counts"],
        "timing": ee["timing"],
        "policy": ee["policy"],
        "exits": report["exits"],
        "seconds": round(time.time() - started, 1),
    }
    harness.write_result(result, args.out, run)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
