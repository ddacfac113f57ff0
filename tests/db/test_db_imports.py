"""The store stands alone: importing every db module pulls in none of the app, workers,
pipelines, classifier or Celery (the one-way import rule)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_db_imports_nothing_above_it() -> None:
    code = (
        "import json, sys\n"
        "import db, db.models, db.states, db.session, db.repository, db.audit\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout))
    assert "db" in loaded
    assert loaded.isdisjoint({"doctriage", "workers", "pipelines", "classifier", "celery", "torch"})
