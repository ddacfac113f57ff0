"""Store fixtures: every test that takes `engine` runs on a SQLite file and on a PostgreSQL
database created for this test session (dropped at the end)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Base
from db.session import make_engine, migrate, session_factory

PG_ADMIN_URL = os.environ.get(
    "DOCTRIAGE_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def _admin() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def create_pg_database(prefix: str = "doctriage_test") -> str:
    """A fresh, uniquely named PostgreSQL database; returns its URL. Skips if none is reachable."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.orig}")
    finally:
        admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = _admin()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = create_pg_database()
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    drop_pg_database(url)


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
    url = create_pg_database("doctriage_fresh")
    try:
        yield url
    finally:
        drop_pg_database(url)
