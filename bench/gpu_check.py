"""GPU check: early-exit serving throughput of a random `base`-size model, in a few minutes.

Builds a model of a named size with random weights (nothing is trained or downloaded), casts it
to bf16 (and/or fp16, in turn), makes synthetic encoded pages directly as tensors (no PDFs, no
OCR) and measures, per dtype and batch size:

- pure model:   full depth, pre-collated batches, no batcher (the hardware's reference);
- full depth:   the stage batcher (classifier/stage_batcher.py, the code that serves) in drain
                mode with early_exit=False, recording to the worker's metrics as a worker does;
- early exit:   the same batcher with early exit, a policy that exits a fixed share of the pages
                still running at each stage (random weights give meaningless confidences, so a
                fixed share is the honest operating point), inputs on the device;
- early exit, host inputs: the same with the inputs in host memory, as `encode` leaves them
                (collation and the host-to-device copy are then part of the time).

Reports pages/s (wall, synchronised), speed-up vs full depth, batch fill per stage, and the ratio
to the ideal speed-up by FLOPs (as bench/batching.py computes it). Stops adding configurations
once --budget-s has passed; writes the JSON after every configuration, so a run cut short still
leaves what it measured.

    python -m bench.gpu_check [--device cuda] [--config base] [--dtypes bf16,fp16]
        [--batch-sizes 64,256,512] [--pages 8192] [--exit-share 0.3] [--out FILE]

Imports only torch, transformers (4.x), tokenizers, safetensors, numpy, pillow and
prometheus_client (workers/metrics.py, whose hooks the batcher records to, as in a worker).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench import harness
from classifier.config import NAMED_SIZES
from classifier.factory import new_model
from classifier.policy import ExitPolicy
from classifier.predict import make_decider, split_rows
from classifier.stage_batcher import PagePrediction, StageBatcher
from classifier.tokenizer import train_tokenizer
from workers.metrics import BatcherMetrics

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GOAL_EARLY_EXIT_PAGES_PER_S = 4000  # issue 18: base size, one H200
WORDS = ["invoice", "total", "amount", "due", "date", "agreement", "between", "parties",
         "receipt", "payment", "account", "contract", "signature", "page", "number", "address",
         "customer", "order", "tax", "balance", "statement"]


@dataclass
class FixedShare(ExitPolicy):
    """Exits a fixed share of the pages at each non-final stage, drawn from a seeded generator
    (independent of the confidences, which mean nothing for random weights)."""

    share: float = 0.3
    seed: int = 0
    _gen: torch.Generator = field(init=False, repr=False)

    name = "fixed_share"

    def __post_init__(self) -> None:
        self._gen = torch.Generator().manual_seed(self.seed)

    def _decide(self, stage: int, trail: torch.Tensor) -> torch.Tensor:
        return torch.rand(trail.shape[0], generator=self._gen) < self.share

    def to_json(self) -> dict:
        return {"name": self.name, "share": self.share, "seed": self.seed}


def build_model(config: str, device: str, dtype: torch.dtype, labels: int) -> Any:
    size = NAMED_SIZES[config]
    text = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12)) for i in range(200)]
    tok = train_tokenizer(text, vocab_size=size.vocab_size)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: a CPU init of `base` takes seconds
        model = new_model(config, "every", [f"class{i}" for i in range(labels)], tok)
    return model.to(device=device, dtype=dtype).eval()


def synthetic_batch(model: Any, n: int, device: str, seed: int) -> dict[str, torch.Tensor]:
    """n encoded pages of the model's shapes, as `model.encode` gives them: <s> words </s>
    <pad>... with ordered 0-1000 boxes, and random pixels in the model's dtype (`embed` passes
    pixel values to the patch convolution as they come). Pixels are drawn on the device: on a
    CPU, drawing 8192 pages of 224x224 takes longer than the check."""
    g = torch.Generator().manual_seed(seed)
    t = model.preprocessing.max_text_len
    side = model.preprocessing.image_size
    vocab = len(model.tokenizer)
    lengths = torch.randint(max(3, t // 8), t + 1, (n,), generator=g)
    pos = torch.arange(t).unsqueeze(0)
    real = pos < lengths.unsqueeze(1)
    ids = torch.randint(5, vocab, (n, t), generator=g)  # past the 5 special tokens
    ids[:, 0] = 0  # <s>
    ids[pos == (lengths - 1).unsqueeze(1)] = 2  # </s>
    ids[~real] = 1  # <pad>
    xy = torch.randint(0, 1001, (n, t, 4), generator=g)
    bbox = torch.stack([xy[..., [0, 2]].min(-1).values, xy[..., [1, 3]].min(-1).values,
                        xy[..., [0, 2]].max(-1).values, xy[..., [1, 3]].max(-1).values], dim=-1)
    bbox[~real] = 0
    dtype = next(model.parameters()).dtype
    g_dev = torch.Generator(device=device).manual_seed(seed)
    pixels = torch.randn(n, 3, side, side, generator=g_dev, device=device, dtype=dtype)
    return {
        "input_ids": ids.to(device),
        "bbox": bbox.to(device),
        "attention_mask": real.long().to(device),
        "pixel_values": pixels,
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def collate(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}


def ideal_speedup(model: Any, exit_stages: list[int]) -> float:
    """Full-depth FLOPs over the mean FLOPs of these exits (bench/batching.py's definition)."""
    per_stage = model.stage_flops()
    return model.full_flops() / (sum(per_stage[s] for s in exit_stages) / len(exit_stages))


@torch.inference_mode()
def pure_full(model: Any, batches: list[dict[str, torch.Tensor]], device: str) -> float:
    """Seconds for every page through every layer, batches already collated: no batcher."""
    sync(device)
    t0 = time.perf_counter()
    for inputs in batches:
        model.advance(model.embed(inputs), stages=model.num_stages - 1)
    sync(device)
    return time.perf_counter() - t0


def run_batcher(model: Any, rows: list, b: int, early_exit: bool, args: argparse.Namespace
                ) -> tuple[float, StageBatcher, list[PagePrediction]]:
    """One drain of every row through a fresh batcher (`args.exit_share` exits per stage, on
    `args.device`): (seconds, batcher, each page's answer). Checks that every page left exactly
    once."""
    device = args.device
    policy = FixedShare(model.num_stages, share=args.exit_share, seed=b)
    batcher = StageBatcher(model, make_decider(model, policy), max_batch=b,
                           early_exit=early_exit, schedule="deepest_full",
                           hooks=BatcherMetrics("early" if early_exit else "full"))
    sync(device)
    t0 = time.perf_counter()
    futures = batcher.submit(rows, list(range(len(rows))))
    batcher.drain()
    sync(device)
    seconds = time.perf_counter() - t0
    results = [f.result() for f in futures]  # raises if a batch failed
    out = sum(s.pages_exited for s in batcher.stats)
    if out != len(rows):
        raise RuntimeError(f"{len(rows)} pages in, {out} out")
    return seconds, batcher, results


def best_of(repeat: int, fn: Callable[[], tuple]) -> tuple:
    """The run with the least wall time (the first doubles as warm-up when repeat > 1)."""
    runs = [fn() for _ in range(repeat)]
    return min(runs, key=lambda r: r[0])


def batcher_report(model: Any, n: int, seconds: float, batcher: StageBatcher,
                   results: list[PagePrediction]) -> dict:
    exits = [r.exit_stage for r in results]
    hist = Counter(exits)
    layers = model.exit_layers
    return {
        "pages_per_s": round(n / seconds, 1),
        "wall_s": round(seconds, 4),
        "pages_in": n,
        "pages_out": sum(s.pages_exited for s in batcher.stats),
        "exit_stage_histogram": {str(k): hist[k] for k in sorted(hist)},
        "mean_layers_per_page": round(sum(layers[s] for s in exits) / n, 3),
        "peak_parked_pages": batcher.peak_parked,
        # NaN/inf confidences would mean the dtype overflows somewhere (fp16).
        "nonfinite_confidences": sum(not math.isfinite(r.confidence) for r in results),
        "stages": [s for s in batcher.stats_dict() if s["batches"]],
    }


def measure(model: Any, rows: list, host_rows: list | None, b: int, args: argparse.Namespace
            ) -> dict:
    dev = args.device
    n = len(rows)
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    # Warm-up at this batch size (kernel choice per shape), not timed.
    run_batcher(model, rows[: 2 * b], b, True, args)
    batches = [collate(rows[i : i + b]) for i in range(0, n, b)]
    t_pure = min(pure_full(model, batches, dev) for _ in range(args.repeat))
    del batches
    t_full, full_b, full_res = best_of(
        args.repeat, lambda: run_batcher(model, rows, b, False, args))
    t_ee, ee_b, ee_res = best_of(
        args.repeat, lambda: run_batcher(model, rows, b, True, args))
    ideal = ideal_speedup(model, [r.exit_stage for r in ee_res])
    early = batcher_report(model, n, t_ee, ee_b, ee_res)
    row: dict[str, Any] = {
        "batch": b,
        "pure_model_full_depth_pages_per_s": round(n / t_pure, 1),
        "full_depth": batcher_report(model, n, t_full, full_b, full_res),
        "early_exit": early,
        "speedup_vs_full_depth": round(t_full / t_ee, 3),
        "ideal_speedup": round(ideal, 3),
        "ratio_to_ideal": round(t_full / t_ee / ideal, 3),
        "speedup_vs_pure_model_full_depth": round(t_pure / t_ee, 3),
        # What the hardware would give early exit with perfect batching and no overhead.
        "ideal_early_exit_pages_per_s": round(n / t_pure * ideal, 1),
        "batch_fill_per_stage": {str(s["stage"]): s["mean_fill"] for s in early["stages"]},
    }
    if host_rows is not None:
        t_host, host_b, host_res = best_of(
            args.repeat, lambda: run_batcher(model, host_rows, b, True, args))
        host = batcher_report(model, n, t_host, host_b, host_res)
        row["early_exit_host_inputs"] = {k: host[k] for k in (
            "pages_per_s", "wall_s", "pages_in", "pages_out", "mean_layers_per_page")}
    if dev.startswith("cuda"):
        row["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


@torch.inference_mode()
def dtype_check(model: Any, batch: dict[str, torch.Tensor], pages: int = 32) -> dict:
    """Is the staged forward sound in the model's dtype? On a few pages: its final logits against
    transformers' own forward in the same dtype (the position-bias and mask code paths), and its
    final probabilities against an fp32 run of the same weights (a bf16/fp16 weight is exact in
    fp32, so the cast there and back changes nothing)."""
    dtype = next(model.parameters()).dtype
    inputs = {k: v[:pages] for k, v in batch.items()}
    logits, _ = model.all_exit_logits(inputs)
    staged = logits[-1].float()
    ordinary = model.full_forward_logits(inputs).float()
    probs = model.calibrated_probs(model.num_stages - 1, staged)
    model.float()
    try:
        ref_logits, _ = model.all_exit_logits({**inputs, "pixel_values":
                                               inputs["pixel_values"].float()})
    finally:
        model.to(dtype)
    ref = model.calibrated_probs(model.num_stages - 1, ref_logits[-1].float())
    return {
        "pages": staged.shape[0],
        "finite": bool(torch.isfinite(staged).all()),
        "staged_vs_transformers_max_abs_logit_diff": round(float((staged - ordinary).abs().max()),
                                                           5),
        "vs_fp32_max_abs_prob_diff": round(float((probs - ref).abs().max()), 5),
        "vs_fp32_label_agreement": round(float((probs.argmax(-1) == ref.argmax(-1)).float()
                                               .mean()), 4),
    }


def library_versions() -> dict[str, str]:
    import tokenizers
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "python": platform.python_version()}


def arguments() -> argparse.ArgumentParser:
    # --out: no default (the shell wrapper passes $OUT/gpu_check.json); torch threads: torch's.
    ap = harness.parser(__doc__, "gpu_check", harness.Common(out=False, threads=False))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--config", default="base", choices=sorted(NAMED_SIZES))
    ap.add_argument("--dtypes", default=None,
                    help="comma-separated, run in turn (bf16, fp16, fp32); default bf16 on "
                         "cuda, fp32 on cpu")
    ap.add_argument("--attention", default="eager",
                    help="comma-separated encoder attention paths, run in turn: eager "
                         "(transformers' layers, the bit-exact reference) and/or fused "
                         "(one scaled_dot_product_attention kernel per layer)")
    ap.add_argument("--batch-sizes", default="64,256,512")
    ap.add_argument("--pages", type=int, default=8192)
    ap.add_argument("--exit-share", type=float, default=0.3,
                    help="share of the pages still running that exits at each non-final stage")
    ap.add_argument("--labels", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per way, best kept")
    ap.add_argument("--budget-s", type=float, default=210.0,
                    help="start no new configuration after this many seconds")
    ap.add_argument("--no-host-inputs", action="store_true",
                    help="skip the early-exit run with inputs in host memory")
    ap.add_argument("--out", "--json", dest="out", type=Path, default=None)
    return ap


@dataclass(frozen=True)
class Plan:
    """What the arguments ask to measure, checked."""

    sizes: list[int]
    dtypes: list[str]
    attentions: list[str]


def plan_of(args: argparse.Namespace) -> Plan:
    """The checked batch sizes, dtypes and attention paths; BadInput for anything unusable."""
    try:
        sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise harness.BadInput(f"--batch-sizes wants positive integers, got {args.batch_sizes!r}")
    on_device = args.device != "cpu"
    dtypes = [d.strip() for d in (args.dtypes or ("bf16" if on_device else "fp32")).split(",")]
    if not all(d in DTYPES for d in dtypes):
        raise harness.BadInput(f"--dtypes takes {', '.join(DTYPES)}, got {args.dtypes!r}")
    attentions = [a.strip() for a in args.attention.split(",") if a.strip()]
    if not attentions or not set(attentions) <= {"eager", "fused"}:
        raise harness.BadInput(f"--attention takes eager and/or fused, got {args.attention!r}")
    if not 0.0 <= args.exit_share < 1.0 or args.pages < 1 or args.repeat < 1:
        raise harness.BadInput("--exit-share must be in [0, 1), --pages and --repeat at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise harness.BadInput("--device cuda but torch sees no CUDA device")
    return Plan(sizes, dtypes, attentions)


def report_head(model: Any, args: argparse.Namespace, plan: Plan, setup_s: float) -> dict:
    """The report's fixed part: what ran where, before any result."""
    on_device = args.device != "cpu"
    return {
        "check": "gpu_check",
        "device": args.device,
        "device_name": (torch.cuda.get_device_name(args.device) if on_device
                        else platform.processor() or platform.machine()),
        "versions": library_versions(),
        "config": args.config,
        "dtypes": plan.dtypes,
        "attention": plan.attentions,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seq_len": model.seq_len,
        "exit_layers": model.exit_layers,
        "num_stages": model.num_stages,
        "policy": FixedShare(model.num_stages, share=args.exit_share).to_json(),
        "pages": args.pages,
        "repeat": args.repeat,
        "budget_s": args.budget_s,
        "goal_early_exit_pages_per_s": GOAL_EARLY_EXIT_PAGES_PER_S,
        "setup_s": round(setup_s, 2),
        "dtype_checks": {},
        "results": [],
        "skipped": [],
    }


class Check:
    """The report as it grows, written out after every result so a killed run keeps them."""

    def __init__(self, report: dict, args: argparse.Namespace, run: harness.Run,
                 started: float) -> None:
        self.report, self.args, self.run, self.started = report, args, run, started

    def over_budget(self) -> bool:
        return time.perf_counter() - self.started > self.args.budget_s

    def skip(self, attention: str, dtype: str, batch: int, reason: str) -> None:
        self.report["skipped"].append(
            {"attention": attention, "dtype": dtype, "batch": batch, "reason": reason})

    def write(self) -> None:
        report = self.report
        done = report["results"]
        if done:
            best = max(done, key=lambda r: r["early_exit"]["pages_per_s"])
            report["best"] = {
                "attention": best["attention"],
                "dtype": best["dtype"],
                "batch": best["batch"],
                "early_exit_pages_per_s": best["early_exit"]["pages_per_s"],
                "meets_goal": best["early_exit"]["pages_per_s"] >= GOAL_EARLY_EXIT_PAGES_PER_S,
            }
        report["elapsed_s"] = round(time.perf_counter() - self.started, 2)
        harness.write_result(report, self.args.out, self.run, echo=False)

    def variant(self, model: Any, attention: str, dtype_name: str, sizes: list[int]) -> Any:
        """Every batch size with one attention path and dtype; returns the (cast) model."""
        args = self.args
        model.attention_impl = attention
        if self.over_budget():
            for b in sizes:
                self.skip(attention, dtype_name, b, "time budget spent")
            return model
        model = model.to(DTYPES[dtype_name])  # random weights: a cast is as good as a new model
        batch = synthetic_batch(model, args.pages, args.device, seed=1)
        self.report["dtype_checks"][f"{attention}/{dtype_name}"] = dtype_check(model, batch)
        rows = split_rows(batch)  # one-page views, as the classify runtime submits them
        host_rows = (split_rows({k: v.cpu() for k, v in batch.items()})
                     if args.device != "cpu" and not args.no_host_inputs else None)
        for b in sizes:
            if self.over_budget():
                self.skip(attention, dtype_name, b, "time budget spent")
                continue
            try:
                row = {"attention": attention, "dtype": dtype_name,
                       **measure(model, rows, host_rows, b, args)}
            except torch.cuda.OutOfMemoryError as exc:
                # One batch size too large for the device must not cost the others.
                self.skip(attention, dtype_name, b, f"out of memory: {exc}"[:300])
                torch.cuda.empty_cache()
                self.write()
                continue
            self.report["results"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            self.write()
        return model


def main() -> int:
    args = arguments().parse_args()
    run = harness.Run(malloc=None)  # glibc's malloc, as this check always measured
    started = time.perf_counter()
    plan = plan_of(args)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # only matters for fp32
    model = build_model(args.config, args.device, DTYPES[plan.dtypes[0]], args.labels)
    report = report_head(model, args, plan, time.perf_counter() - started)
    check = Check(report, args, run, started)
    for attention in plan.attentions:
        for dtype_name in plan.dtypes:
            model = check.variant(model, attention, dtype_name, plan.sizes)
    check.write()
    print(json.dumps(report, indent=2))
    print(summary(report), file=sys.stderr)
    return 0


def summary(report: dict) -> str:
    """A few lines to read at a glance (the JSON has everything)."""
    lines = [f"{report['device_name']} | {report['config']} | {report['pages']} pages | exit "
             f"share {report['policy']['share']} | goal {report['goal_early_exit_pages_per_s']} "
             "early-exit pages/s",
             "attn  dtype batch  pure_full  full  early  early_host  speedup  ideal  ratio  "
             "mem_GiB  fill per stage"]
    for r in report["results"]:
        host = r.get("early_exit_host_inputs", {}).get("pages_per_s", "-")
        fill = " ".join(f"{v:.2f}" for v in r["batch_fill_per_stage"].values())
        lines.append(
            f"{r['attention']:5} {r['dtype']:5} {r['batch']:5}  "
            f"{r['pure_model_full_depth_pages_per_s']:9}  "
            f"{r['full_depth']['pages_per_s']:4}  {r['early_exit']['pages_per_s']:5}  "
            f"{host:10}  {r['speedup_vs_full_depth']:7}  {r['ideal_speedup']:5}  "
            f"{r['ratio_to_ideal']:5}  {r.get('peak_gpu_mem_gib', '-'):7}  {fill}")
    lines += [f"skipped {s['attention']} {s['dtype']} {s['batch']}: {s['reason'][:120]}"
              for s in report["skipped"]]
    lines += [f"dtype check {d}: {c}" for d, c in report["dtype_checks"].items()]
    if "best" in report:
        lines.append(f"best: {report['best']}")
    lines.append(f"elapsed {report['elapsed_s']} s")
    return "\n".join(lines)


if __name__ == "__main__":
    harness.run_main(main)
