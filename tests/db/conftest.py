"""Store fixtures: every test that takes `engine` runs on a SQLite file and on a PostgreSQL
database created for this test session (dropped at the end)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from servicekit import fresh_pg_database, migrated_pg_database
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from db.models import Base
from db.session import make_engine, migrate, session_factory


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with migrated_pg_database("doctriage_test") as url:
        yield url


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def engine(backend: str, request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    """A migrated, empty store on the parametrised backend."""
    if backend == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'store' / 'doctriage.db'}")
        migrate(eng)
    else:
        eng = make_engine(request.getfixturevalue("pg_url"))
        tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
        with eng.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield eng
    eng.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def fresh_url(backend: str, tmp_path) -> Iterator[str]:
    """The URL of an empty, unmigrated store on the parametrised backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh' / 'doctriage.db'}"
        return
    with fresh_pg_database("doctriage_fresh") as url:
        yield url


@pytest.fixture
def store_cli(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`store_cli(register, *prefix)`: a command group (its module's `register`) run in
    process against this test's store, `prefix` words put before each call's arguments."""
    import typer
    from typer.testing import CliRunner

    from doctriage.settings import get_settings

    monkeypatch.setenv("DOCTRIAGE_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()

    def make(register: Any, *prefix: str) -> Any:
        app = typer.Typer()
        register(app)
        return lambda *args: CliRunner().invoke(app, [*prefix, *args])

    yield make
    get_settings.cache_clear()


@pytest.fixture
def audit_cli(store_cli: Any) -> Any:
    """`doctriage audit ...` run in process against this test's store."""
    from doctriage.commands import audit as audit_cmd

    return store_cli(audit_cmd.register, "audit")
