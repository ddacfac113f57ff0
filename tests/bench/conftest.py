"""Fixtures for the benchmark smoke tests: a tiny model bundle built here (nothing is downloaded)
and a two-document realdocs-style folder (one text-layer PDF, one image that needs OCR)."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
import torch

LABELS = ["contract", "receipt"]


@pytest.fixture(scope="session")
def bench_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny early-exit LayoutLMv3 saved as a bundle (the benches time it, so its
    answers do not matter)."""
    from classifier.bundle import save_bundle
    from classifier.config import NAMED_SIZES
    from classifier.factory import new_model
    from classifier.tokenizer import train_tokenizer

    size = NAMED_SIZES["tiny"]
    tok = train_tokenizer(["agreement between the parties total amount receipt date"] * 50,
                          vocab_size=size.vocab_size)
    torch.manual_seed(0)
    model = new_model("tiny", "every", LABELS, tok)
    path = tmp_path_factory.mktemp("bench-bundle") / "tiny"
    save_bundle(model.eval(), path, name="tiny-bench")
    return path


@pytest.fixture(scope="session")
def bench_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifest.csv + contract/one.pdf (1 page, text layer) + receipt/two.png (OCR)."""
    from PIL import Image, ImageDraw
    from reportlab.lib.pagesizes import letter
    from reportlab.pdfgen import canvas

    root = tmp_path_factory.mktemp("bench-docs")
    (root / "contract").mkdir()
    (root / "receipt").mkdir()
    pdf = root / "contract" / "one.pdf"
    c = canvas.Canvas(str(pdf), pagesize=letter)
    c.setFont("Helvetica", 14)
    c.drawString(72, 700, "Agreement between the parties")
    c.drawString(72, 680, "Confidential information shall not be disclosed")
    c.showPage()
    c.save()
    png = root / "receipt" / "two.png"
    im = Image.new("RGB", (600, 200), "white")
    ImageDraw.Draw(im).text((20, 80), "TOTAL AMOUNT 12.50", fill="black", font_size=32)
    im.save(png, dpi=(200, 200))
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "source", "pages", "sha256", "bytes"])
        for rel, label in (("contract/one.pdf", "contract"), ("receipt/two.png", "receipt")):
            data = (root / rel).read_bytes()
            w.writerow([rel, label, "generated", 1, hashlib.sha256(data).hexdigest(), len(data)])
    return root
