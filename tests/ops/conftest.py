"""Fixtures for the operations tests: a fresh PostgreSQL database, a Redis database number
claimed for this run, free TCP ports, and the workflow tests' tiny model bundle."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from modelkit import build_tiny_bundle
from servicekit import free_port as servicekit_free_port
from servicekit import fresh_pg_database, spare_redis_db


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_pg_database("doctriage_ops") as url:
        yield url


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with spare_redis_db() as url:
        yield url


@pytest.fixture
def free_port() -> Callable[[], int]:
    return servicekit_free_port


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny random bundle the workflow tests build (nothing is downloaded)."""
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")
