"""The classifier stands alone: its engine (the stage batcher, predict, evaluation, baselines)
pulls in none of workers, db, the app, Celery, SQL or prometheus (the one-way import rule:
`doctriage -> workers -> pipelines, classifier, db`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {"doctriage", "workers", "db", "pipelines", "celery", "kombu", "sqlalchemy", "redis",
             "prometheus_client"}


def test_classifier_imports_nothing_above_it() -> None:
    code = (
        "import json, sys\n"
        "import classifier, classifier.stage_batcher, classifier.predict, classifier.baselines\n"
        "import classifier.evaluation, classifier.bundle, classifier.training\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout))
    assert {"classifier", "torch"} <= loaded
    assert not loaded & FORBIDDEN, loaded & FORBIDDEN
