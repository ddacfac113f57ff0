"""Tiny models and hand-made pages: every classifier test runs in seconds on a CPU."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
import torch
from classwords import CLASS_WORDS
from PIL import Image, ImageDraw

from classifier.config import NAMED_SIZES
from classifier.factory import new_model
from classifier.inputs import PageInput
from classifier.model import EarlyExitModel
from classifier.tokenizer import train_tokenizer

# One thread: on this shared 2-core machine two torch threads fighting other jobs run ~7x slower.
torch.set_num_threads(1)

LABELS = ["invoice", "letter", "receipt"]
VOCAB = {label: CLASS_WORDS[label] for label in LABELS}
COMMON = ["the", "of", "and", "a", "to", "in", "for", "on", "with", "page"]


def make_page(label: str, rng: random.Random) -> PageInput:
    n = rng.randint(8, 40)
    words, boxes = [], []
    for i in range(n):
        pool = VOCAB[label] if rng.random() < 0.6 else COMMON
        words.append(rng.choice(pool))
        x, y = rng.randint(0, 900), min(980, 20 + 24 * i)
        boxes.append((x, y, x + rng.randint(20, 90), y + 18))
    shade = {"invoice": (230, 230, 255), "letter": (255, 255, 240), "receipt": (240, 240, 240)}
    image = Image.new("RGB", (85, 110), shade[label])
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 9)):
        y = rng.randint(0, 100)
        draw.line((rng.randint(0, 40), y, rng.randint(45, 84), y), fill=(20, 20, 20))
    return PageInput(words, boxes, image, meta={"label": label})


def make_pages(count: int, seed: int = 0) -> tuple[list[PageInput], torch.Tensor]:
    rng = random.Random(seed)
    labels = [i % len(LABELS) for i in range(count)]
    pages = [make_page(LABELS[i], rng) for i in labels]
    return pages, torch.tensor(labels)


def tiny_model(placement: str = "every", seed: int = 0, raster_width: int = 0) -> EarlyExitModel:
    torch.manual_seed(seed)
    pages, _ = make_pages(30, seed=99)
    tok = train_tokenizer([" ".join(p.words) for p in pages], NAMED_SIZES["tiny"].vocab_size)
    return new_model("tiny", placement, LABELS, tok, raster_width=raster_width).eval()


@pytest.fixture
def model() -> EarlyExitModel:
    return tiny_model()


@pytest.fixture
def pages() -> list[PageInput]:
    return make_pages(12, seed=1)[0]


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture
def page_factory():
    return make_pages


@pytest.fixture(scope="session")
def labelled_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The short generated documents (synthkit: five text-layer PDFs, one image page needing
    OCR) as a DATA folder: a manifest naming each one's label and source collection."""
    from synthkit import PDFS, SCAN, write_short_docs

    root = write_short_docs(tmp_path_factory.mktemp("labelled"))
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "source"])
        for doc in PDFS:
            writer.writerow([doc.name, doc.label, "born-digital-set"])
        writer.writerow([SCAN.name, SCAN.label, "scan-set"])
    return root
