"""Fixtures for page-ingestion tests (generated documents live in pagedocs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def by_source(realdocs_manifest: list[dict[str, str]], realdocs_dir: Path):
    """Paths of realdocs documents from one source, in manifest order."""

    def pick(source: str, n: int | None = None) -> list[Path]:
        paths = [realdocs_dir / r["path"] for r in realdocs_manifest if r["source"] == source]
        return paths[:n] if n else paths

    return pick
