"""pipelines is documents -> pages and sources only: importing every one of its modules pulls
in no store, no workers, no app (the one-way import rule; what writes SQL lives in
workers/intake/)."""

from __future__ import annotations

import pkgutil

import pipelines
from tests.importkit import top_level_modules_after


def test_pipelines_imports_no_store_and_nothing_above_it() -> None:
    modules = [m.name for m in pkgutil.walk_packages(pipelines.__path__, "pipelines.")]
    assert {"pipelines.sources", "pipelines.s3", "pipelines.sqs", "pipelines.pages"} <= set(modules)
    loaded = top_level_modules_after(*modules)
    assert "pipelines" in loaded
    assert loaded.isdisjoint({"db", "sqlalchemy", "alembic", "workers", "doctriage", "celery"})
