"""Fixtures for the operations tests: a fresh PostgreSQL database, a Redis database number
claimed for this run, free TCP ports, and the workflow tests' tiny model bundle."""

from __future__ import annotations

import importlib.util
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379"
CLAIM_KEY = "doctriage-test-claim"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    import psycopg2

    name = f"doctriage_ops_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg2.connect(PG_ADMIN, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """An empty Redis database number, claimed with a key so a test running in parallel
    (other suites pick empty numbers too) does not take the same one; flushed afterwards."""
    import redis

    token = uuid.uuid4().hex
    for db in range(13, 1, -1):
        client = redis.Redis.from_url(f"{REDIS}/{db}")
        try:
            if client.dbsize() == 0 and client.set(CLAIM_KEY, token, nx=True) \
                    and client.dbsize() == 1:
                break
        except redis.ConnectionError as exc:
            pytest.skip(f"Redis not reachable: {exc}")
    else:
        pytest.skip("no empty Redis database number to use")
    try:
        yield f"{REDIS}/{db}"
    finally:
        client.flushdb()


@pytest.fixture
def free_port() -> Callable[[], int]:
    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    return pick


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny random bundle the workflow tests build (nothing is downloaded)."""
    path = Path(__file__).resolve().parents[1] / "workers" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_workers_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")
