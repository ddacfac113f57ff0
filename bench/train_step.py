"""Training step time by precision: the same batches of the joint loss (every exit) through a
fresh model in float32 and under CPU autocast to bfloat16, interleaved, so a busy machine
weighs on both alike.

    python -m bench.train_step [--config small] [--pages 96] [--batch-size 16] [--rounds 2]
        [--threads N] [--out FILE]

Pages are generated (random words with boxes, a drawn raster; text-dense like realdocs'
pages, which fill the model's text length), so no data folder is needed. Reports seconds per
pass over the pages for each precision (the first round of each is warm-up and not counted)
and the speed-up of bf16.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from bench import harness

PRECISIONS = ("fp32", "bf16")


def main() -> int:
    ap = harness.parser(__doc__, "train_step")
    ap.add_argument("--config", default="small", choices=["tiny", "small", "base"])
    ap.add_argument("--pages", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds per precision")
    args = ap.parse_args()
    if args.pages < 1 or args.batch_size < 1 or args.rounds < 1:
        raise harness.BadInput("--pages, --batch-size and --rounds must be at least 1")
    run = harness.start(args)
    seconds = _time_steps(args)
    medians = {p: statistics.median(seconds[p][1:]) for p in PRECISIONS}
    result = {
        "config": args.config, "pages": args.pages, "batch_size": args.batch_size,
        "seconds_per_pass": seconds,
        "median_s": {p: round(v, 3) for p, v in medians.items()},
        "bf16_speedup": round(medians["fp32"] / medians["bf16"], 3),
    }
    harness.write_result(result, args.out, run, note=(
        "forward + backward + AdamW step of the joint loss over every exit; bf16 = CPU autocast "
        "(weights, gradients and losses in float32); first round of each precision is warm-up"))
    return 0


def _time_steps(args: Any) -> dict[str, list[float]]:
    import torch

    from classifier.config import NAMED_SIZES
    from classifier.factory import new_model
    from classifier.tokenizer import train_tokenizer

    # the training loop's own step (word dropout, autocast, loss over every exit, clipping)
    from classifier.training import TrainOptions, _EpochRunner

    pages, labels = _pages(args.pages)

    tok = train_tokenizer((" ".join(p.words) for p in pages), NAMED_SIZES[args.config].vocab_size)
    torch.manual_seed(0)
    model = new_model(args.config, "every", [str(i) for i in range(10)], tok)
    inputs = model.encode(pages)
    seconds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    runners = {p: _EpochRunner(model, inputs, labels, TrainOptions(
        batch_size=args.batch_size, precision=p, progress=False), None) for p in PRECISIONS}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for _ in range(args.rounds + 1):  # + the warm-up round
        for precision, runner in runners.items():
            started = time.perf_counter()
            for start in range(0, len(labels), args.batch_size):
                idx = torch.arange(start, min(start + args.batch_size, len(labels)))
                runner._step(optimizer, idx, "joint")
            seconds[precision].append(round(time.perf_counter() - started, 3))
    return seconds


def _pages(n: int) -> tuple[list[Any], Any]:
    import torch
    from PIL import Image, ImageDraw

    from classifier.inputs import PageInput

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    pages = []
    for _ in range(n):
        words = [rng.choice(vocab) for _ in range(180)]
        boxes = []
        for _ in words:
            x, y = rng.randrange(0, 900), rng.randrange(0, 950)
            boxes.append((x, y, x + 50, y + 20))
        image = Image.new("RGB", (850, 1100), "white")
        ImageDraw.Draw(image).rectangle((100, 100, 700, rng.randrange(200, 900)), fill="black")
        pages.append(PageInput(words, boxes, image))
    return pages, torch.tensor([i % 10 for i in range(n)])


if __name__ == "__main__":
    harness.run_main(main)
