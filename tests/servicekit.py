"""The real services the tests share with each other (and with other test runs on the machine):
a fresh PostgreSQL database per user, and a Redis database number claimed atomically.

One implementation for every suite: picking "an empty DB number" without a claim let two suites
running at once take the same number and consume each other's messages."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

PG_ADMIN = os.environ.get("DOCTRIAGE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("DOCTRIAGE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
CLAIM_KEY = "doctriage-test-claim"


@contextlib.contextmanager
def fresh_pg_database(prefix: str = "doctriage_test") -> Iterator[str]:
    """A new, empty database (psycopg2 URL); dropped, with its connections, afterwards."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg2.connect(PG_ADMIN, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@contextlib.contextmanager
def spare_redis_db(low: int = 1, high: int = 15) -> Iterator[str]:
    """An empty Redis DB number, claimed with SET NX so a concurrent run picks another one;
    flushed afterwards. The shared server is never restarted and FLUSHALL is never used."""
    import redis

    token = uuid.uuid4().hex
    client = None
    for db in range(high, low - 1, -1):
        candidate = redis.Redis.from_url(f"{REDIS}/{db}")
        try:
            if (
                candidate.dbsize() == 0
                and candidate.set(CLAIM_KEY, token, nx=True)
                and candidate.dbsize() == 1
            ):
                client = candidate
                break
        except redis.ConnectionError as exc:
            pytest.skip(f"Redis not reachable: {exc}")
    if client is None:
        pytest.skip("no empty Redis database number to use")
    try:
        yield f"{REDIS}/{db}"
    finally:
        client.flushdb()
