"""Labelled training/evaluation data from a DATA folder, as pages (`pipelines.page_content.Page`,
which the classifier reads as they are) that carry their document's key.

DATA is a folder with `manifest.csv` (columns `path,label`, paths relative to the folder; an
optional `source` column names the document's collection, else synth's `scanned` column gives
`scanned`/`born_digital`; other columns ignored) or one sub-folder per class. Every page
carries its document's label; the train/validation split is by document (seeded, stratified by
label), never by page.

Ingestion (OCR especially: 2-4 s a page here) is paid once (`PageCache`): each document's pages
are cached under a cache folder as words/boxes JSON plus the raster already downsized to the
model's input, keyed by the file's sha256, the ingest options and the image size."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from safetensors.numpy import load_file, save_file

from pipelines.artifacts import downsize
from pipelines.errors import DocumentError
from pipelines.options import IngestOptions
from pipelines.page_content import Page

DOCUMENT_SUFFIXES = {".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}
SCAN_SUFFIX = "#scan"  # a scan copy's key: its original's key + this
CACHE_VERSION = 1
# Ingest options added after entries were first written, with their defaults: they join the
# cache key only when set away from the default.
_LATER_OPTIONS = {"ocr_psm": 3}
# Options that change when OCR runs in the service, not what a cached page holds (the cache
# always reads a page's words at ingest).
_NOT_IN_KEY = ("defer_ocr",)


class DatasetError(ValueError):
    """DATA cannot be used; the message is one line."""


@dataclass(frozen=True)
class DocumentEntry:
    key: str  # path relative to DATA, the document's identity in splits
    path: Path
    label: str
    # Not None: the document as a scanner would have delivered it (pipelines.synth.scan:
    # rasterised, skewed, blurred, speckled, JPEG'd, then read by OCR), damage seeded by this.
    scan_seed: int | None = field(default=None, kw_only=True)

    # the collection it came from (evaluation breakdowns): the manifest's `source` column, synth's
    # scanned flag, else the top folder of its key
    source: str = field(default="", compare=False, kw_only=True)

    def scanned_copy(self, seed: int) -> DocumentEntry:
        """This PDF as a simulated scan: its own key (the copy of a training document trains,
        of a held-out one is scored beside its original)."""
        return DocumentEntry(self.key + SCAN_SUFFIX, self.path, self.label, scan_seed=seed,
                             source=self.source)

    @property
    def original_key(self) -> str:
        return self.key.removesuffix(SCAN_SUFFIX) if self.scan_seed is not None else self.key


def born_digital(doc: DocumentEntry, pages: Sequence[Page]) -> bool:
    """A PDF whose every page was read from its text layer: what a scan copy teaches about."""
    own = [p for p in pages if p.doc_key == doc.key]
    return (doc.path.suffix.lower() == ".pdf" and bool(own)
            and all(p.text_source == "text_layer" for p in own))


def scan_copies(docs: Sequence[DocumentEntry], pages: Sequence[Page], share: float,
                seed: int) -> list[DocumentEntry]:
    """Scan copies of `share` of the born-digital documents among `docs` (a seeded choice;
    each copy's damage seeded by the document's key)."""
    eligible = [d for d in docs if born_digital(d, pages)]
    rng = random.Random(f"{seed}:scan-copies")  # noqa: S311 (a sample, not a secret)
    chosen = sorted(rng.sample(eligible, round(len(eligible) * min(max(share, 0.0), 1.0))),
                    key=lambda d: d.key)
    return [d.scanned_copy(_seed_of(f"{seed}:{d.key}")) for d in chosen]


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def document_source(row: dict[str, str], key: str) -> str:
    """A document's source collection from its manifest row (see DocumentEntry.source)."""
    if (row.get("source") or "").strip():
        return row["source"].strip()
    if (row.get("scanned") or "").strip() in ("0", "1"):  # pipelines.synth's manifest
        return "scanned" if row["scanned"].strip() == "1" else "born_digital"
    parts = Path(key).parts
    return parts[0] if len(parts) > 1 else "."


def read_documents(data_dir: Path) -> list[DocumentEntry]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: no such folder")
    manifest = data_dir / "manifest.csv"
    docs = _manifest_documents(manifest) if manifest.exists() else _folder_documents(data_dir)
    if not docs:
        raise DatasetError(
            f"{data_dir}: no documents (need manifest.csv or one sub-folder per class)"
        )
    if len({d.label for d in docs}) < 2:
        raise DatasetError(f"{data_dir}: need at least two classes")
    return docs


def _manifest_documents(manifest: Path) -> list[DocumentEntry]:
    """The documents `manifest.csv` lists (paths relative to its folder), each checked."""
    docs: list[DocumentEntry] = []
    with open(manifest, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{manifest}: needs columns path,label")
        for row in reader:
            path = manifest.parent / row["path"]
            if not path.is_file():
                raise DatasetError(f"{manifest}: listed file missing: {row['path']}")
            if not row["label"].strip():
                raise DatasetError(f"{manifest}: empty label for {row['path']}")
            docs.append(DocumentEntry(row["path"], path, row["label"].strip(),
                                      source=document_source(row, row["path"])))
    return docs


def _folder_documents(data_dir: Path) -> list[DocumentEntry]:
    """Every document under each sub-folder, labelled with the sub-folder's name."""
    return [
        DocumentEntry(str(path.relative_to(data_dir)), path, sub.name, source=sub.name)
        for sub in sorted(p for p in data_dir.iterdir() if p.is_dir())
        for path in sorted(sub.rglob("*"))
        if path.is_file() and path.suffix.lower() in DOCUMENT_SUFFIXES
    ]


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


def _cache_key(path: Path, options: IngestOptions, image_size: int,
               scan_seed: int | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    made = {"v": CACHE_VERSION, "size": image_size, **asdict(options)}
    for name in _NOT_IN_KEY:
        made.pop(name, None)
    for name, default in _LATER_OPTIONS.items():
        if made[name] == default:  # entries written before the option existed stay valid
            del made[name]
    if scan_seed is not None:  # absent for originals: their keys stay what they were
        made["scan_seed"] = scan_seed
    opts = json.dumps(made, sort_keys=True)
    return f"{digest.hexdigest()[:32]}-{hashlib.sha256(opts.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class PageCache:
    """Documents' pages, ingested once into `folder`: one entry per document, keyed by the
    file's sha256, the ingest options and `image_size` (the side of the square rasters kept)."""

    folder: Path
    image_size: int
    options: IngestOptions = field(default_factory=IngestOptions)

    def load(
        self,
        docs: Sequence[DocumentEntry],
        *,
        workers: int = 1,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[Page], list[str]]:
        """Pages of `docs` (ingesting what is missing with `workers` processes), each with its
        document's key as `doc_key`, and the error lines of documents that could not be read
        (they are skipped). `progress(done, total)` counts documents."""
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        targets = [self.entry(d) for d in docs]
        missing = [(d, t) for d, t in zip(docs, targets, strict=True) if not t.exists()]
        done = len(docs) - len(missing)
        if progress:
            progress(done, len(docs))
        errors: list[str] = []
        for err in self._ingest_all(missing, workers):
            errors.extend([err] if err else [])
            done += 1
            if progress:
                progress(done, len(docs))
        pages: list[Page] = []
        for d, t in zip(docs, targets, strict=True):
            if t.exists():
                pages.extend(_read_entry(t, d.key))
        return pages, errors

    def entry(self, doc: DocumentEntry) -> Path:
        return Path(self.folder) / _cache_key(doc.path, self.options, self.image_size,
                                              doc.scan_seed)

    def _ingest_all(
        self, missing: Sequence[tuple[DocumentEntry, Path]], workers: int
    ) -> Iterator[str | None]:
        docs, targets = [d for d, _ in missing], [t for _, t in missing]
        if workers > 1 and missing:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                yield from pool.map(self.ingest, docs, targets)
        else:
            yield from map(self.ingest, docs, targets)

    def ingest(self, doc: DocumentEntry, target: Path) -> str | None:
        """Ingest one document into its entry `target`. Returns an error line or None."""
        # The ingestion stack is only needed on a cache miss.
        from pipelines.pages import iter_pages

        meta, images = [], []
        try:
            for page in iter_pages(_source_of(doc), name=doc.key, options=self.options):
                images.append(np.asarray(self._raster(page.image), dtype=np.uint8))
                meta.append(_entry_meta(page))
        except DocumentError as e:
            return str(e)
        if not meta:
            return f"{doc.key}: no pages"
        _write_entry(target, meta, np.stack(images))
        return None

    def _raster(self, image: Image.Image) -> Image.Image:
        return model_raster(image, self.image_size)


def model_raster(image: Image.Image, image_size: int) -> Image.Image:
    """A page image as the cache keeps it: the square RGB raster the model reads."""
    size = (image_size, image_size)
    return downsize(image).convert("RGB").resize(size, Image.Resampling.BILINEAR)


def _source_of(doc: DocumentEntry) -> Path | io.BytesIO:
    """The document's file, or its simulated scan (an image-only PDF: ingest OCRs it)."""
    if doc.scan_seed is None:
        return doc.path
    from pipelines.synth.scan import scan_pdf

    try:
        scanned = scan_pdf(doc.path.read_bytes(), random.Random(doc.scan_seed))  # noqa: S311
    except Exception as exc:  # pdfium's errors: this copy is skipped like an unreadable file
        raise DocumentError(doc.key, f"cannot simulate a scan: {exc}") from exc
    return io.BytesIO(scanned)


def _entry_meta(page: Page) -> dict[str, Any]:
    return {
        "number": page.number,
        "words": list(page.words),
        "boxes": [list(b) for b in page.boxes],
        "text_source": page.text_source,
        # Added after version 1's first entries: entries without them read the raster's size.
        "width": page.width,
        "height": page.height,
    }


def _write_entry(target: Path, meta: list[dict[str, Any]], images: np.ndarray) -> None:
    """Written beside `target` and renamed into place, so a reader never sees half an entry."""
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({"images": images}, str(tmp / "images.safetensors"))
    (tmp / "pages.json").write_text(json.dumps(meta))
    if target.exists():  # another process finished first
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    else:
        tmp.rename(target)


def _read_entry(target: Path, doc_key: str) -> list[Page]:
    meta = json.loads((target / "pages.json").read_text())
    images = load_file(str(target / "images.safetensors"))["images"]
    pages = []
    for i, p in enumerate(meta):
        image = Image.fromarray(images[i])
        pages.append(Page(
            number=p["number"],
            width=p.get("width", image.width),
            height=p.get("height", image.height),
            image=image,
            words=[str(w) for w in p["words"]],
            boxes=[tuple(b) for b in p["boxes"]],
            text_source=p["text_source"],
            doc_key=doc_key,
        ))
    return pages
