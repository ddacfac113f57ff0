"""Generate a labelled synthetic corpus: out_dir/<label>/<label>-<nnnn>.pdf plus manifest.csv.

Every document gets its own `random.Random` seeded from (corpus seed, label, index) through
SHA-256, never Python's salted `hash()` nor the global random state, so the same seed and
per_class give byte-identical files whatever the order or process they are made in.
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipelines.synth.layouts import LAYOUTS, render
from pipelines.synth.scan import scan_pdf

CLASSES: tuple[str, ...] = tuple(LAYOUTS)
MANIFEST_COLUMNS = ("path", "label", "scanned", "pages", "seed", "sha256", "bytes")

# Lengths of born-digital documents (page cap drawn per document); scanned ones stay at 1-2
# pages because ingestion OCRs them at a few seconds a page.
_BORN_CAPS = (1, 1, 2, 2, 3, 4)
_SCANNED_CAPS = (1, 1, 1, 2)


@dataclass(frozen=True)
class SynthDoc:
    path: str  # relative to the corpus folder
    label: str
    scanned: bool
    pages: int
    seed: int
    sha256: str
    bytes: int


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (stable across processes, unlike hash())."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def scanned_indices(label: str, per_class: int, seed: int, fraction: float) -> set[int]:
    """Exactly per_class * fraction (half up) scanned documents per class, at seeded positions."""
    count = math.floor(per_class * fraction + 0.5)  # not round(): banker's rounding gives 0.5 -> 0
    rng = random.Random(derive_seed(seed, label, "scanned"))  # noqa: S311 - reproducible data
    return set(rng.sample(range(per_class), count))


def make_document(label: str, doc_seed: int, scanned: bool) -> tuple[bytes, int]:
    """(PDF bytes, pages) of one document; a pure function of its arguments."""
    rng = random.Random(doc_seed)  # noqa: S311 - seeded for reproducibility, not security
    cap = rng.choice(_SCANNED_CAPS if scanned else _BORN_CAPS)
    pdf, pages = render(label, rng, cap)
    if scanned:
        pdf = scan_pdf(pdf, rng)
    return pdf, pages


def iter_corpus(
    out_dir: Path,
    per_class: int,
    seed: int,
    *,
    scanned_fraction: float,
    classes: Sequence[str],
) -> Iterator[SynthDoc]:
    """Write the documents one by one, yielding each manifest row."""
    for label in classes:
        (out_dir / label).mkdir(parents=True, exist_ok=True)
        scanned_at = scanned_indices(label, per_class, seed, scanned_fraction)
        for i in range(per_class):
            doc_seed = derive_seed(seed, label, i)
            scanned = i in scanned_at
            pdf, pages = make_document(label, doc_seed, scanned)
            rel = f"{label}/{label}-{i:04d}.pdf"
            (out_dir / rel).write_bytes(pdf)
            yield SynthDoc(
                rel, label, scanned, pages, doc_seed, hashlib.sha256(pdf).hexdigest(), len(pdf)
            )


def generate_corpus(
    out_dir: Path,
    per_class: int,
    seed: int,
    *,
    scanned_fraction: float = 0.3,
    classes: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Write `per_class` documents of each class under `out_dir`; return manifest.csv's path."""
    classes = tuple(classes) if classes is not None else CLASSES
    unknown = [c for c in classes if c not in LAYOUTS]
    if unknown:
        raise ValueError(f"unknown class(es): {', '.join(unknown)}; known: {', '.join(CLASSES)}")
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be non-empty and distinct, got {list(classes)}")
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if not 0.0 <= scanned_fraction <= 1.0:
        raise ValueError(f"scanned_fraction must be within [0, 1], got {scanned_fraction}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    docs = iter_corpus(out_dir, per_class, seed, scanned_fraction=scanned_fraction, classes=classes)
    manifest = out_dir / "manifest.csv"
    with (
        # disable=None: drawn only when stderr is a terminal (no '\r' fragments in logs)
        tqdm(total=per_class * len(classes), desc="synth", unit="doc",
             disable=None if progress else True) as bar,
        open(manifest, "w", newline="") as fh,
    ):
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_COLUMNS)
        for d in docs:
            writer.writerow([d.path, d.label, int(d.scanned), d.pages, d.seed, d.sha256, d.bytes])
            bar.update(1)
    return manifest
