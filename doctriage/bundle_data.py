"""A DATA folder's documents as pages and model inputs, for training and evaluating bundles:
the page cache (pipelines.dataset) with a progress bar, and encoding in chunks."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from classifier.model import EarlyExitModel
from pipelines.dataset import DatasetError, DocumentEntry, PageCache
from pipelines.options import IngestOptions
from pipelines.page_content import Page


def stderr_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class PageLoading:
    """Where and how documents become cached pages, for training and evaluation alike."""

    cache_dir: Path
    image_size: int
    ingest: IngestOptions
    workers: int = 1
    progress: bool = True
    log: Callable[[str], None] = stderr_line


def load_split_pages(docs: Sequence[DocumentEntry], how: PageLoading) -> list[Page]:
    """The pages of `docs` (from the cache, else ingested); unreadable documents are logged."""
    # disable=None: tqdm draws only on a terminal, so redirected logs get no '\r' fragments
    bar = tqdm(total=len(docs), desc="pages (ingest/cache)", unit="doc",
               disable=None if how.progress else True)

    def tick(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    cache = PageCache(how.cache_dir, how.image_size, how.ingest)
    pages, errors = cache.load(docs, workers=how.workers, progress=tick)
    bar.close()
    for err in errors:
        how.log(f"skipped unreadable document: {err}")
    return pages


def encode_pages(
    model: EarlyExitModel, pages: Sequence[Page], progress: bool, chunk: int = 64
) -> dict[str, torch.Tensor]:
    parts = []
    bar_off = None if progress and pages else True  # None: on a terminal only
    for s in tqdm(range(0, len(pages), chunk), desc="encode", disable=bar_off):
        parts.append(model.encode(pages[s : s + chunk]))
    if not parts:
        raise DatasetError("no pages to encode")
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
