"""The store stands alone: importing every db module pulls in none of the app, workers,
pipelines, classifier or Celery (the one-way import rule)."""

from __future__ import annotations

from tests.importkit import top_level_modules_after


def test_db_imports_nothing_above_it() -> None:
    loaded = top_level_modules_after(
        "db", "db.models", "db.states", "db.session", "db.repository", "db.audit",
        "db.audit_loss", "db.review",
    )
    assert "db" in loaded
    assert loaded.isdisjoint({"doctriage", "workers", "pipelines", "classifier", "celery", "torch"})
