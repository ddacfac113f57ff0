"""Fixtures for the operations tests: a fresh PostgreSQL database, a Redis database number
claimed for this run and free TCP ports (the tiny model bundle and the short documents are
project-wide, in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from servicekit import free_port as servicekit_free_port
from servicekit import pg_url_fixture, redis_url_fixture

pg_url = pg_url_fixture("doctriage_ops")
redis_url = redis_url_fixture()


@pytest.fixture
def free_port() -> Callable[[], int]:
    return servicekit_free_port
