"""Classifier capacity per worker on this machine's CPU: pages/s of a full-depth pass (embed +
every layer) for the named backbone sizes, on dense synthetic pages (max text length filled,
a full raster), at a given batch size and torch thread count. Random weights: speed does not
depend on what the model learned. The full-depth figure is the early-exit pass's upper bound
of cost; docs/operations.md scales it by the measured mean depth (bench/results/early_exit.json).

    python -m bench.capacity [--sizes small,base] [--batch 8] [--threads 1,2] [--repeats 2]
                             [--device cpu|cuda] [--seed 0] [--out FILE]

Prints JSON and writes bench/results/capacity.json (or --out).
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time

import torch
from PIL import Image

from bench import harness
from classifier.config import NAMED_SIZES
from classifier.factory import new_model
from classifier.inputs import PageInput
from classifier.model import EarlyExitModel
from classifier.tokenizer import train_tokenizer

LABELS = ["a", "b", "c", "d"]
WORDS = ["invoice", "total", "amount", "due", "date", "signature", "agreement", "parties",
         "section", "table", "figure", "abstract", "results", "method", "account", "number",
         "address", "payment", "receipt", "form"]


def dense_pages(n: int, seed: int = 0) -> list[PageInput]:
    rng = random.Random(seed)
    pages = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(600)]  # more than any max_text_len: truncated
        boxes = []
        for i in range(len(words)):
            x, y = (i % 10) * 95, (i // 10) * 16 % 980
            boxes.append((x, y, x + 90, y + 14))
        pages.append(PageInput(words, boxes, Image.new("RGB", (850, 1100), "white")))
    return pages


def build(size_name: str, seed: int = 0) -> EarlyExitModel:
    size = NAMED_SIZES[size_name]
    tok = train_tokenizer([" ".join(WORDS)] * 50, vocab_size=min(size.vocab_size, 2000))
    torch.manual_seed(seed)
    return new_model(size_name, "every", LABELS, tok).eval()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(model: EarlyExitModel, batch: int, repeats: int, device: str = "cpu",
            seed: int = 0) -> dict[str, float]:
    inputs = {k: v.to(device) for k, v in model.encode(dense_pages(batch, seed)).items()}
    with torch.inference_mode():
        state = model.embed(inputs)  # warm-up
        model.advance(state, stages=model.num_stages - 1)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            state = model.embed(inputs)
            model.advance(state, stages=model.num_stages - 1)
        _sync(device)
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _ in range(repeats):
            model.encode(dense_pages(batch, seed=seed + 1))
        encode_s = time.perf_counter() - t1
    pages = batch * repeats
    return {"pages_per_s": round(pages / seconds, 3),
            "ms_per_page": round(1000 * seconds / pages, 1),
            "encode_ms_per_page": round(1000 * encode_s / pages, 1)}


def main() -> int:
    # --threads here is the list of torch thread counts to sweep, not the common single count.
    ap = harness.parser(__doc__, "capacity", harness.Common(threads=False, device=True, seed=0))
    ap.add_argument("--sizes", default="small,base")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", dest="thread_counts", default="1,2",
                    help="torch thread counts to measure, in turn")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    unknown = [s for s in args.sizes.split(",") if s not in NAMED_SIZES]
    if unknown:
        raise harness.BadInput(f"unknown size {unknown[0]!r} (use {', '.join(NAMED_SIZES)})")
    run = harness.start(args)
    results = []
    for name in args.sizes.split(","):
        model = build(name, args.seed).to(args.device)
        for threads in (int(t) for t in args.thread_counts.split(",")):
            torch.set_num_threads(threads)
            row = {"size": name, "layers": NAMED_SIZES[name].layers, "batch": args.batch,
                   "torch_threads": threads,
                   **measure(model, args.batch, args.repeats, args.device, args.seed)}
            print(json.dumps(row), file=sys.stderr, flush=True)
            results.append(row)
    out = {"bench": "capacity", "malloc": run.malloc,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
           "shared with other jobs (loaded)", "device": args.device, "torch": torch.__version__,
           "results": results}
    harness.write_result(out, args.out, run)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
