"""Fixtures for the operations tests: a fresh PostgreSQL database, a Redis database number
claimed for this run, free TCP ports, and the workflow tests' tiny model bundle."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
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
    path = Path(__file__).resolve().parents[1] / "workers" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_workers_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")
