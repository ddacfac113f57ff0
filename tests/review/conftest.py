"""Fixtures for the review page: a filled SQLite store with its artifacts (reviewkit.fill)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def review_store(tmp_path: Path) -> tuple[Any, Any, dict[int, Any]]:
    """(session factory, artifact store, {page id: reviewkit.Stored}) of a filled store."""
    from reviewkit import fill, sqlite_store

    sessions, artifacts = sqlite_store(tmp_path)
    return sessions, artifacts, fill(sessions, artifacts)
