"""Workers never import the application layer (`doctriage -> workers`): importing every workers
module loads no `doctriage` module. This is why workers/context.py takes its resource factories
from doctriage.wiring (an install hook) instead of building them from the settings itself."""

from __future__ import annotations

from pathlib import Path

from tests.importkit import top_level_modules_after

WORKERS = Path(__file__).resolve().parents[2] / "workers"


def test_workers_import_nothing_of_doctriage() -> None:
    modules = sorted(f"workers.{p.stem}" for p in WORKERS.glob("*.py") if p.stem != "__init__")
    assert "workers.tasks" in modules and "workers.context" in modules
    loaded = top_level_modules_after(*modules)
    assert "workers" in loaded and "doctriage" not in loaded
