"""Fixtures for the S3, SQS and backlog tests: moto's real HTTP server on loopback (boto3
talks HTTP to it; no boto3 call is mocked), dummy credentials, a fresh bucket per test, and a
migrated SQLite store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servicekit import migrated_pg_database, moto_server
from sqlalchemy.orm import Session, sessionmaker

from db.session import make_engine, migrate, session_factory
from pipelines.s3 import S3Options, make_client

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server(_ENV) as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for k, v in _ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DOCTRIAGE_S3_ENDPOINT_URL", moto_endpoint)
    return moto_endpoint


@pytest.fixture
def s3_options(aws_env: str) -> S3Options:
    return S3Options(endpoint_url=aws_env, region="us-east-1")


@pytest.fixture
def s3(s3_options: S3Options) -> Any:
    return make_client(s3_options)


@pytest.fixture
def sqs(s3_options: S3Options) -> Any:
    return make_client(s3_options, "sqs")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"drops-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def store(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    return session_factory(engine)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of its own for this session (migrated; dropped at the end)."""
    with migrated_pg_database("doctriage_drops") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """The same test on a SQLite file and on PostgreSQL (tables emptied before each test)."""
    if request.param == "sqlite":
        yield request.getfixturevalue("store")
        return
    from sqlalchemy import text

    engine = make_engine(request.getfixturevalue("pg_url"))
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE documents, pages, predictions, human_labels, watermarks "
                          "RESTART IDENTITY CASCADE"))
    yield session_factory(engine)
    engine.dispose()
