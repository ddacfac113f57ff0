"""A store whose every page is in the audit sample: pages written through the repository and
classified by the real classify and full-depth steps (what `thresholds tune` and the pressure
policy's fallback read)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from classifier.predict import ClassifyRuntime
from db import repository as repo
from db.session import session_scope
from pipelines.artifacts import LocalArtifactStore, encode_page, page_key
from workers import steps

EVERY_PAGE = steps.RerouteOptions(reroute_below=0.0, audit_fraction=1.0)


def classify_audited(factory: Any, artifacts: Path, runtime: ClassifyRuntime,
                     pages: Sequence[Any], uri: str) -> list[int]:
    """One document at `uri` of `pages` through both passes, every page audited; its page
    ids."""
    store = LocalArtifactStore(artifacts)
    ctx = steps.StepContext(sessions=factory, artifacts=store, reroute=EVERY_PAGE)
    name = uri.rsplit("/", 1)[-1]
    with session_scope(factory) as s:
        doc_id, _ = repo.register_document(s, uri, etag=name)
        rows = [repo.PageRecord(p.number, "text_layer", len(p.words),
                                store.put(page_key(doc_id, p.number), encode_page(p)), 170, 220)
                for p in pages]
        ids = repo.upsert_pages(s, doc_id, rows)
    result = steps.classify_pages(ctx, runtime, ids)
    steps.full_depth_pages(ctx, runtime, result.rerouted)
    return ids
