"""Fixtures for the reliability tests: a tiny model bundle built here (nothing downloaded) and
an embedded workflow (real SQLite store, local artifacts, the real steps and stage batcher)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from relkit import build_tiny_bundle

from classifier.bundle import load_bundle
from classifier.predict import BatcherOptions, ClassifyRuntime
from db.session import make_engine, migrate, session_factory
from pipelines.artifacts import LocalArtifactStore
from pipelines.options import IngestOptions
from workers.steps import RerouteOptions, StepContext


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_bundle: Path) -> Any:
    return load_bundle(tiny_bundle)


@dataclass
class Embedded:
    ctx: StepContext
    runtime: ClassifyRuntime
    engine: Any


@pytest.fixture
def make_embedded(tmp_path: Path, tiny_model: Any):
    """An embedded workflow on a fresh SQLite store with the given ingest options."""
    engines = []

    def make(options: IngestOptions | None = None, reroute: RerouteOptions | None = None,
             name: str = "store") -> Embedded:
        engine = make_engine(f"sqlite:///{tmp_path / name}.db")
        migrate(engine)
        engines.append(engine)
        ctx = StepContext(
            sessions=session_factory(engine),
            artifacts=LocalArtifactStore(tmp_path / f"{name}-artifacts"),
            ingest=options or IngestOptions(),
            reroute=reroute or RerouteOptions(reroute_below=0.7, audit_fraction=0.1),
        )
        return Embedded(ctx, ClassifyRuntime(tiny_model, BatcherOptions(max_batch=8)), engine)

    yield make
    for engine in engines:
        engine.dispose()
