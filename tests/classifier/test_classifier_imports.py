"""The classifier stands alone: its engine (the stage batcher, predict, evaluation, baselines)
pulls in none of workers, db, the app, Celery, SQL or prometheus (the one-way import rule:
`doctriage -> workers -> pipelines, classifier, db`)."""

from __future__ import annotations

from tests.importkit import top_level_modules_after

FORBIDDEN = {"doctriage", "workers", "db", "pipelines", "celery", "kombu", "sqlalchemy", "redis",
             "prometheus_client"}


def test_classifier_imports_nothing_above_it() -> None:
    loaded = top_level_modules_after(
        "classifier", "classifier.stage_batcher", "classifier.predict", "classifier.baselines",
        "classifier.evaluation", "classifier.bundle", "classifier.training",
    )
    assert {"classifier", "torch"} <= loaded
    assert not loaded & FORBIDDEN, loaded & FORBIDDEN
