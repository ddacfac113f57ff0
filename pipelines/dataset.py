"""Labelled training/evaluation data from a DATA folder, as classifier page inputs.

DATA is a folder with `manifest.csv` (columns `path,label`, paths relative to the folder, other
columns ignored) or one sub-folder per class. Every page carries its document's label; the
train/validation split is by document (seeded, stratified by label), never by page.

Ingestion (OCR especially: 2-4 s a page here) is paid once: each document's pages are cached
under a cache folder as words/boxes JSON plus the raster already downsized to the model's input,
keyed by the file's sha256, the ingest options and the image size."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import load_file, save_file

from pipelines.artifacts import downsize
from pipelines.errors import DocumentError
from pipelines.options import IngestOptions

DOCUMENT_SUFFIXES = {".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}
CACHE_VERSION = 1


class DatasetError(ValueError):
    """DATA cannot be used; the message is one line."""


@dataclass(frozen=True)
class DocumentEntry:
    key: str  # path relative to DATA, the document's identity in splits
    path: Path
    label: str


@dataclass
class CachedPage:
    """A page as the classifier reads it (duck-types classifier.PageInput)."""

    words: list[str]
    boxes: list[tuple[int, int, int, int]]
    image: Image.Image
    doc_key: str
    number: int
    text_source: str


def read_documents(data_dir: Path) -> list[DocumentEntry]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: no such folder")
    manifest = data_dir / "manifest.csv"
    docs: list[DocumentEntry] = []
    if manifest.exists():
        with open(manifest, newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise DatasetError(f"{manifest}: needs columns path,label")
            for row in reader:
                path = data_dir / row["path"]
                if not path.is_file():
                    raise DatasetError(f"{manifest}: listed file missing: {row['path']}")
                if not row["label"].strip():
                    raise DatasetError(f"{manifest}: empty label for {row['path']}")
                docs.append(DocumentEntry(row["path"], path, row["label"].strip()))
    else:
        for sub in sorted(p for p in data_dir.iterdir() if p.is_dir()):
            for path in sorted(sub.rglob("*")):
                if path.is_file() and path.suffix.lower() in DOCUMENT_SUFFIXES:
                    docs.append(DocumentEntry(str(path.relative_to(data_dir)), path, sub.name))
    if not docs:
        raise DatasetError(
            f"{data_dir}: no documents (need manifest.csv or one sub-folder per class)"
        )
    if len({d.label for d in docs}) < 2:
        raise DatasetError(f"{data_dir}: need at least two classes")
    return docs


def split_documents(
    docs: Sequence[DocumentEntry], val_fraction: float, seed: int
) -> tuple[list[DocumentEntry], list[DocumentEntry]]:
    """Seeded, stratified by label, by document. Each class with >= 2 documents gives at least one
    to validation when val_fraction > 0."""
    if not 0 <= val_fraction < 1:
        raise DatasetError("--val-fraction must be in [0, 1)")
    by_label: dict[str, list[DocumentEntry]] = defaultdict(list)
    for d in docs:
        by_label[d.label].append(d)
    train, val = [], []
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda d: d.key)
        random.Random(f"{seed}:{label}").shuffle(group)  # noqa: S311 (a split, not a secret)
        k = round(len(group) * val_fraction)
        if val_fraction > 0 and len(group) >= 2:
            k = min(len(group) - 1, max(1, k))
        val.extend(group[:k])
        train.extend(group[k:])
    return train, val


def _cache_key(path: Path, options: IngestOptions, image_size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    opts = json.dumps({"v": CACHE_VERSION, "size": image_size, **asdict(options)}, sort_keys=True)
    return f"{digest.hexdigest()[:32]}-{hashlib.sha256(opts.encode()).hexdigest()[:12]}"


def _ingest_to_cache(
    path: Path, name: str, options: IngestOptions, image_size: int, target: Path
) -> str | None:
    """Ingest one document into `target` (a cache folder). Returns an error line or None."""
    from pipelines.pages import iter_pages  # the ingestion stack is only needed on a cache miss

    pages, images = [], []
    try:
        for page in iter_pages(path, name=name, options=options):
            small = (
                downsize(page.image)
                .convert("RGB")
                .resize((image_size, image_size), Image.Resampling.BILINEAR)
            )
            images.append(np.asarray(small, dtype=np.uint8))
            pages.append(
                {
                    "number": page.number,
                    "words": list(page.words),
                    "boxes": [list(b) for b in page.boxes],
                    "text_source": page.text_source,
                }
            )
    except DocumentError as e:
        return str(e)
    if not pages:
        return f"{name}: no pages"
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({"images": np.stack(images)}, str(tmp / "images.safetensors"))
    (tmp / "pages.json").write_text(json.dumps(pages))
    if target.exists():  # another process finished first
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    else:
        tmp.rename(target)
    return None


def _read_cache(target: Path, doc_key: str) -> list[CachedPage]:
    meta = json.loads((target / "pages.json").read_text())
    images = load_file(str(target / "images.safetensors"))["images"]
    return [
        CachedPage(
            [str(w) for w in p["words"]],
            [tuple(b) for b in p["boxes"]],
            Image.fromarray(images[i]),
            doc_key,
            p["number"],
            p["text_source"],
        )
        for i, p in enumerate(meta)
    ]


def load_pages(
    docs: Sequence[DocumentEntry],
    cache_dir: Path,
    image_size: int,
    options: IngestOptions | None = None,
    *,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[CachedPage], list[str]]:
    """Pages of `docs` (cached, ingesting what is missing with `workers` processes) and the
    error lines of documents that could not be read (they are skipped)."""
    options = options or IngestOptions()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    targets = [cache_dir / _cache_key(d.path, options, image_size) for d in docs]
    missing = [(d, t) for d, t in zip(docs, targets, strict=True) if not t.exists()]
    errors: list[str] = []
    done = len(docs) - len(missing)
    if progress:
        progress(done, len(docs))
    if missing:
        args = [(d.path, d.key, options, image_size, t) for d, t in missing]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_ingest_to_cache, *a) for a in args]
                for f in futures:
                    err = f.result()
                    errors.extend([err] if err else [])
                    done += 1
                    if progress:
                        progress(done, len(docs))
        else:
            for a in args:
                err = _ingest_to_cache(*a)
                errors.extend([err] if err else [])
                done += 1
                if progress:
                    progress(done, len(docs))
    pages: list[CachedPage] = []
    for d, t in zip(docs, targets, strict=True):
        if t.exists():
            pages.extend(_read_cache(t, d.key))
    return pages, errors
