"""Audit filters reach the database as bound parameters: hostile strings are watched at the
DBAPI boundary (SQLAlchemy's before_cursor_execute) and never appear in the SQL text, only in
the parameters; the queries match nothing and the tables survive."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from db import audit, audit_loss
from db.models import HumanLabel, Prediction
from db.repository import (
    PageRecord,
    PredictionRecord,
    record_predictions,
    register_document,
    upsert_pages,
)
from db.session import make_engine, migrate, session_factory, session_scope
from doctriage.reporting.calibration import calibration

HOSTILE = [
    "x' OR '1'='1",
    "'; DROP TABLE predictions; --",
    '" OR 1=1 --',
    "invoice') UNION SELECT sqlite_version(), 1, 1 --",
    "%' OR label LIKE '%",
    "\\'; DELETE FROM documents; --",
    "ünïcødé'); -- 🙂",
]


class SqlSpy:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.calls.append((statement, parameters))

    def check(self, hostile: str) -> None:
        assert self.calls, "no SQL was executed"
        for statement, _ in self.calls:
            assert hostile not in statement, statement
        assert any(hostile in repr(params) for _, params in self.calls), "not sent as a parameter"


@pytest.fixture
def spy() -> Iterator[SqlSpy]:
    spy = SqlSpy()
    event.listen(Engine, "before_cursor_execute", spy)
    try:
        yield spy
    finally:
        event.remove(Engine, "before_cursor_execute", spy)


def _seed(url: str) -> Any:
    engine = make_engine(url)
    migrate(engine)
    sessions = session_factory(engine)
    with session_scope(sessions) as s:
        doc_id, _ = register_document(s, "file:///docs/a.pdf", sha256="ab" * 32)
        ids = upsert_pages(s, doc_id, [PageRecord(number=n, text_source="text_layer",
                                                  word_count=3, artifact_ref=f"k{n}",
                                                  width=10, height=10) for n in (1, 2)])
        record_predictions(s, [
            PredictionRecord(page_id=i, model_version="m1", pass_name="early", label="invoice",
                             confidence=0.5, exit_stage=1, exit_layer=1, trail=[0.4, 0.5],
                             latency_ms=1.0) for i in ids
        ])
    return engine, sessions, ids


@pytest.mark.parametrize("hostile", HOSTILE)
def test_audit_queries_bind_hostile_filters(tmp_path: Path, spy: SqlSpy, hostile: str) -> None:
    engine, sessions, ids = _seed(f"sqlite:///{tmp_path / 's.db'}")
    for f in (audit.AuditFilter(label=hostile), audit.AuditFilter(model_version=hostile)):
        spy.calls.clear()
        with session_scope(sessions) as s:
            assert audit.summary(s, f)["total"]["pages"] == 0
            assert audit.low_confidence(s, 1.0, f) == []
            audit.reroutes(s, f)
            calibration(s, f)
            for by in (None, *audit_loss.GROUPINGS):
                assert audit_loss.loss(s, f, by)["total"]["pages"] == 0
        spy.check(hostile)
    spy.calls.clear()
    with session_scope(sessions) as s:
        audit.label(s, ids[0], hostile, who=hostile)
    spy.check(hostile)
    with session_scope(sessions) as s:  # stored verbatim, nothing else touched
        assert s.execute(select(HumanLabel.label)).scalar_one() == hostile.strip()
        assert s.execute(select(func.count()).select_from(Prediction)).scalar() == 2
    engine.dispose()


def test_audit_cli_binds_hostile_class_filter(tmp_path: Path, spy: SqlSpy,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from doctriage.cli import app
    from doctriage.settings import get_settings

    url = f"sqlite:///{tmp_path / 's.db'}"
    _seed(url)[0].dispose()
    monkeypatch.setenv("DOCTRIAGE_DATABASE_URL", url)
    get_settings.cache_clear()
    hostile = HOSTILE[1]
    spy.calls.clear()
    for cmd in (["summary", "--class", hostile, "--json"],
                ["low-confidence", "--below", "0.9", "--model-version", hostile, "--json"],
                ["loss", "--class", hostile, "--by", "source", "--budget", "0.01", "--json"]):
        result = CliRunner().invoke(app, ["audit", *cmd])
        assert result.exit_code == 0, result.output
    spy.check(hostile)
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as s:
        assert s.execute(select(func.count()).select_from(Prediction)).scalar() == 2
    engine.dispose()


@pytest.mark.services
def test_audit_on_postgresql_binds_hostile_filters(spy: SqlSpy) -> None:
    from relkit import pg_available
    from servicekit import fresh_pg_database

    if (reason := pg_available()) is not None:
        pytest.skip(reason)
    with fresh_pg_database("doctriage_sec") as url:
        engine, sessions, _ = _seed(url)
        for hostile in HOSTILE:
            spy.calls.clear()
            with session_scope(sessions) as s:
                f = audit.AuditFilter(label=hostile, model_version=hostile)
                assert audit.low_confidence(s, 1.0, f) == []
                assert audit.summary(s, f)["total"]["pages"] == 0
            spy.check(hostile)
        with session_scope(sessions) as s:
            assert s.execute(select(func.count()).select_from(Prediction)).scalar() == 2
        engine.dispose()
