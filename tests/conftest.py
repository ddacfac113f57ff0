"""Project-wide fixtures: where the real documents are, and an isolated DOCTRIAGE_HOME."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REALDOCS = Path(
    os.environ.get("DOCTRIAGE_REALDOCS", REPO_ROOT.parent / "shared" / "datasets" / "realdocs")
)


@pytest.fixture(scope="session")
def realdocs_dir() -> Path:
    if not (REALDOCS / "manifest.csv").exists():
        pytest.skip(f"realdocs not found at {REALDOCS} (set DOCTRIAGE_REALDOCS)")
    return REALDOCS


@pytest.fixture(scope="session")
def realdocs_manifest(realdocs_dir: Path) -> list[dict[str, str]]:
    with open(realdocs_dir / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own DOCTRIAGE_HOME so no test reads or writes the user's store."""
    home = tmp_path_factory.mktemp("doctriage-home")
    monkeypatch.setenv("DOCTRIAGE_HOME", str(home))
    from doctriage.settings import get_settings

    get_settings.cache_clear()
    return home
