"""What importing some modules drags in, read in a fresh interpreter (the one-way import rule:
`doctriage -> workers -> pipelines, classifier, db`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def top_level_modules_after(*modules: str) -> set[str]:
    """Top-level package names in sys.modules after importing `modules` in a new process."""
    code = (
        f"import json, sys\nimport {', '.join(modules)}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))
