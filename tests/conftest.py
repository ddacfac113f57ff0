"""Project-wide fixtures: where the real documents are, the generated short documents and tiny
model bundle the workflow tests share, and an isolated DOCTRIAGE_HOME."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def short_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of short generated documents (synthkit: 5 text-layer PDFs and a PNG scan, 8
    pages), made once per session; real files, since a folder source refuses symlinks out."""
    from synthkit import write_short_docs

    return write_short_docs(tmp_path_factory.mktemp("short-docs"))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random early-exit bundle built here (nothing is downloaded)."""
    from modelkit import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


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


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """A CLI command run in-process may install doctriage's log handler on the root logger (as
    it does in a real process); take it off again so the next test starts with pytest's."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        if handler.get_name() == "doctriage":
            root.removeHandler(handler)
    root.setLevel(level)
