"""Migrations: apply from empty on both backends, match the models, and are safe to race."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from racekit import run_at_once
from sqlalchemy import inspect, text

from db.models import Base
from db.session import alembic_config, make_engine, migrate

TABLES = {"documents", "pages", "predictions", "human_labels", "watermarks", "policies",
          "alembic_version"}


def test_migrations_apply_from_empty_and_match_models(fresh_url: str) -> None:
    url = fresh_url
    engine = make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == set()
        migrate(engine)
        migrate(engine)  # second call is a no-op
        insp = inspect(engine)
        assert set(insp.get_table_names()) == TABLES
        uniques = {
            t: {tuple(u["column_names"]) for u in insp.get_unique_constraints(t)}
            for t in ("documents", "pages", "predictions")
        }
        assert ("source_uri", "version_key") in uniques["documents"]
        assert ("document_id", "number") in uniques["pages"]
        assert ("page_id", "model_version", "pass_name") in uniques["predictions"]
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head
            # The hand-written revisions describe exactly the ORM models.
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == []
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        migrate(engine)
        assert set(inspect(engine).get_table_names()) == TABLES
    finally:
        engine.dispose()


def test_concurrent_migrate_on_a_fresh_database(fresh_url: str) -> None:
    """Workers starting together each call migrate(); exactly one creates the schema."""
    url = fresh_url
    engines = [make_engine(url) for _ in range(3)]
    run_at_once([partial(migrate, e) for e in engines])
    with engines[0].connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    for e in engines:
        e.dispose()


def test_sqlite_engine_pragmas_and_parent_dir(tmp_path: Path) -> None:
    db_file = tmp_path / "deep" / "er" / "store.db"
    engine = make_engine(f"sqlite:///{db_file}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30_000
        assert db_file.exists()
    finally:
        engine.dispose()


def test_bare_postgresql_url_uses_psycopg2() -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:5432/postgres")
    assert engine.dialect.driver == "psycopg2"
    assert engine.pool._pre_ping is True
    engine.dispose()


@pytest.mark.parametrize("url", ["sqlite:///relative-but-fine.db"])
def test_migrate_works_without_alembic_ini(url: str, tmp_path: Path, monkeypatch) -> None:
    """The application path reads no alembic.ini: run from an unrelated working directory."""
    monkeypatch.chdir(tmp_path)
    engine = make_engine(url)
    try:
        migrate(engine)
        assert "documents" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_new_connection_waits_for_a_lock_held_while_it_switches_to_wal(tmp_path: Path) -> None:
    """SQLite refuses a journal-mode change at once ("database is locked", no busy wait) while
    another connection holds a write lock: workers opening a fresh store together failed that
    way. make_engine's connections wait for the lock instead."""
    import sqlite3

    path = tmp_path / "store.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    release.start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
            assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        release.join()
        holder.close()
        engine.dispose()


def test_0003_adds_the_full_depth_columns_to_existing_predictions(fresh_url: str) -> None:
    """Rows written before 0003 keep their values, are not in the audit sample and have no
    reason; the reason's CHECK holds on both backends; down to 0002 and back keeps the rows
    (SQLite: ADD/DROP COLUMN, never a table copy that would cascade)."""
    from sqlalchemy.exc import IntegrityError

    with _store_at(fresh_url, "0002") as engine:
        with engine.begin() as conn:
            _one_done_page(conn)
            _page_predictions(conn, ("early", 0.5, 0), ("full", 0.9, 3))
        migrate(engine)
        select_new = text(
            "SELECT pass_name, policy_version, full_depth_reason, audit_sample, exit_answers"
            " FROM predictions ORDER BY id")
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(select_new)]
        assert rows == [("early", None, None, False, None), ("full", None, None, False, None)]
        with engine.begin() as conn:
            conn.execute(text("UPDATE predictions SET full_depth_reason = 'manual',"
                              " audit_sample = true WHERE pass_name = 'full'"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE predictions SET full_depth_reason = 'because'"))
        _downgrade(engine, "0002")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM predictions")).scalar_one() == 2
            columns = {c["name"] for c in inspect(conn).get_columns("predictions")}
            assert "audit_sample" not in columns and "full_depth_reason" not in columns
        migrate(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pages")).scalar_one() == 1


def test_0004_adds_policies_beside_existing_rows_and_drops_it_on_the_way_down(
        fresh_url: str) -> None:
    """Existing predictions keep their policy versions; the new table starts empty and takes
    a stored policy (JSON spec and record); down to 0003 drops only it, and back up again."""
    with _store_at(fresh_url, "0003") as engine:
        with engine.begin() as conn:
            _one_done_page(conn)
            conn.execute(text(
                "INSERT INTO predictions (page_id, model_version, pass_name, label, confidence,"
                " exit_stage, exit_layer, trail, created_at, policy_version, audit_sample)"
                " VALUES (1, 'm', 'early', 'memo', 0.5, 0, 0, '[0.5]', '2026-01-01',"
                " 'm+p12345678', true)"))
        migrate(engine)
        from db.policies import NewPolicy, add_policy, latest_policy
        from db.session import session_factory, session_scope

        with session_scope(session_factory(engine)) as s:
            assert latest_policy(s, "m") is None
            add_policy(s, NewPolicy("m", "m+pabcdef01", {"name": "max_softmax",
                                                         "thresholds": [0.9, 0.0]},
                                    "test", record={"budget": 0.01}))
        with session_scope(session_factory(engine)) as s:
            stored = latest_policy(s, "m")
            assert (stored.spec["thresholds"], stored.record) == ([0.9, 0.0], {"budget": 0.01})
            assert stored.created_at.tzinfo is not None
        with engine.connect() as conn:
            assert conn.execute(text("SELECT policy_version FROM predictions")).scalar_one() == (
                "m+p12345678")
        _downgrade(engine, "0003")
        with engine.connect() as conn:
            assert "policies" not in inspect(conn).get_table_names()
            assert conn.execute(text("SELECT count(*) FROM predictions")).scalar_one() == 1
        migrate(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM policies")).scalar_one() == 0
            assert conn.execute(text("SELECT count(*) FROM predictions")).scalar_one() == 1


def test_0005_adds_the_ocr_states_and_columns_keeping_rows(fresh_url: str) -> None:
    """The pages' state CHECK takes OCR_QUEUED and OCRING (and still refuses other values) on
    both backends, rows survive (SQLite: the schema text is swapped in place, never a table
    copy that would cascade); down to 0004 moves pages in the new states back to PENDING."""
    from sqlalchemy.exc import IntegrityError

    with _store_at(fresh_url, "0004") as engine:
        with engine.begin() as conn:
            _one_done_page(conn)
            _page_predictions(conn, ("early", 0.5, 0))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE pages SET state = 'OCRING'"))
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE pages SET state = 'OCRING'"))
            row = conn.execute(text("SELECT ocr_free, ocr_ran FROM predictions")).one()
            assert tuple(row) == (False, None)
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE pages SET state = 'BOGUS'"))
        _downgrade(engine, "0004")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT state FROM pages")).scalar_one() == "PENDING"
            assert conn.execute(text("SELECT count(*) FROM predictions")).scalar_one() == 1
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE pages SET state = 'OCR_QUEUED'"))
        migrate(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM predictions")).scalar_one() == 1


def test_upgrade_from_0001_keeps_pages_and_marks_old_failures_permanent(tmp_path) -> None:
    """SQLite: adding the columns must not copy (and so drop, cascading to pages) documents."""
    with _store_at(f"sqlite:///{tmp_path / 'old.db'}", "0001") as engine:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO documents (id, source_uri, version_key, state, error, attempts,"
                " created_at, updated_at) VALUES (1, 'file:///a.pdf', 'x', 'FAILED', 'boom', 1,"
                " '2026-01-01', '2026-01-01'), (2, 'file:///b.pdf', 'y', 'DONE', NULL, 1,"
                " '2026-01-01', '2026-01-01')"))
            conn.execute(text(
                "INSERT INTO pages (document_id, number, state, attempts, created_at, updated_at)"
                " VALUES (2, 1, 'DONE', 1, '2026-01-01', '2026-01-01')"))
        migrate(engine)
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT id, failure_kind, failed_attempts FROM documents ORDER BY id")).all()
            assert [tuple(r) for r in rows] == [(1, "permanent", 1), (2, None, 0)]
            assert conn.execute(text("SELECT count(*) FROM pages")).scalar_one() == 1
        _downgrade(engine, "0001")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pages")).scalar_one() == 1



@contextlib.contextmanager
def _store_at(url: str, revision: str) -> Iterator[Any]:
    """An engine on a store migrated up to `revision` (the older schema a test fills)."""
    engine = make_engine(url)
    try:
        migrate(engine, revision)
        yield engine
    finally:
        engine.dispose()


def _one_done_page(conn: Any) -> None:
    """Document 1 with its page 1, both DONE, as the 0002+ schema stores them."""
    conn.execute(text(
        "INSERT INTO documents (id, source_uri, version_key, state, attempts,"
        " failed_attempts, created_at, updated_at) VALUES (1, 'file:///a.pdf', 'x',"
        " 'DONE', 1, 0, '2026-01-01', '2026-01-01')"))
    conn.execute(text(
        "INSERT INTO pages (id, document_id, number, state, attempts, failed_attempts,"
        " created_at, updated_at) VALUES (1, 1, 1, 'DONE', 1, 0, '2026-01-01',"
        " '2026-01-01')"))


def _page_predictions(conn: Any, *rows: tuple[str, float, int]) -> None:
    """Page 1's predictions (model 'm', label 'memo') in the columns every schema since 0001
    has: one (pass, confidence, exit stage) each."""
    for pass_name, confidence, stage in rows:
        conn.execute(text(
            "INSERT INTO predictions (page_id, model_version, pass_name, label, confidence,"
            " exit_stage, exit_layer, trail, created_at) VALUES (1, 'm', :p, 'memo', :c, :s,"
            " :s, :t, '2026-01-01')"), {"p": pass_name, "c": confidence, "s": stage,
                                        "t": f"[{confidence}]"})


def _downgrade(engine, revision: str) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
