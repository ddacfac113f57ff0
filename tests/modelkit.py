"""The tiny model bundle the workflow, operations, drops, reliability and security tests share:
random weights built here (nothing is downloaded), exits after every layer, temperature and
thresholds set so that pages leave at every stage."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

LABELS = ["contract", "form", "invoice", "receipt", "resume", "scientific_publication"]
TEXTS = [
    "non disclosure agreement between the parties invoice total amount due receipt",
    "resume experience education skills form date signature abstract introduction",
]


def build_tiny_bundle(
    path: Path,
    *,
    seed: int = 0,
    name: str = "tiny-test",
    texts: Sequence[str] = TEXTS,
    labels: Sequence[str] = LABELS,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """`labels` and `metadata` (exits.json's, e.g. {"corpus": {"kind": "synthetic"}}) let a test
    build a bundle that looks like one trained on another corpus."""
    import torch

    from classifier.bundle import save_bundle
    from classifier.config import NAMED_SIZES
    from classifier.factory import new_model
    from classifier.tokenizer import train_tokenizer

    tok = train_tokenizer(list(texts) * 50, vocab_size=NAMED_SIZES["tiny"].vocab_size)
    torch.manual_seed(seed)
    model = new_model("tiny", "every", list(labels), tok)
    # Chosen from seed 0's confidence spread so pages leave at every stage.
    model.temperatures.fill_(0.1)
    model.thresholds = [0.86, 0.9, 0.6, 0.6, 0.0]
    model.policy_spec = {"name": "max_softmax", "thresholds": list(model.thresholds)}
    if metadata is not None:
        model.metadata = dict(metadata)
    save_bundle(model.eval(), path, name=name)
    return path


def scribbled_page(rng: random.Random, vocab: Sequence[str], words: tuple[int, int]
                   ) -> tuple[list[str], list[tuple[int, int, int, int]], Image.Image]:
    """A random page for model inputs: `words` (a randrange) words drawn from `vocab`, their
    boxes (0-1000), and a 170x220 image with a black bar where each word is."""
    k = rng.randrange(*words)
    chosen = [rng.choice(vocab) for _ in range(k)]
    boxes = []
    for _ in range(k):
        x, y = rng.randrange(0, 900), rng.randrange(0, 950)
        boxes.append((x, y, x + rng.randrange(10, 100), y + 20))
    img = Image.new("RGB", (170, 220), "white")
    draw = ImageDraw.Draw(img)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle((x0 * 0.17, y0 * 0.22, x1 * 0.17, y1 * 0.22), fill="black")
    return chosen, boxes, img


def scribbled_contents(n: int, seed: int = 0) -> list[Any]:
    """`n` scribbled text-layer pages (pipelines' Page) from one seed: the pages the store
    tests run through the real classify and full-depth steps."""
    from pipelines.page_content import Page

    rng = random.Random(seed)
    vocab = ["invoice", "total", "dear", "sir", "memo", "date", "amount", "report", "form", "to"]
    pages = []
    for number in range(1, n + 1):
        words, boxes, img = scribbled_page(rng, vocab, (3, 30))
        pages.append(Page(number=number, width=170, height=220, text_source="text_layer",
                          words=words, boxes=boxes, image=img))
    return pages
