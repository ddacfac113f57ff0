"""Fixtures for the security tests: the reliability helpers (`relkit`) and a tiny bundle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# relkit lives with the reliability tests; tests/ folders are not packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))


@pytest.fixture(scope="session")
def security_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from relkit import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")

