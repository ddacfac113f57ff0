"""Credentials come from the environment (or the AWS default chain), never from the repository:
no access key ids, no literal passwords in URLs (compose files interpolate ${VARS}), and no
code that hands boto3 an explicit key. Tests are excluded (they plant fake secrets on purpose)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ["doctriage", "workers", "pipelines", "classifier", "db", "bench", "scripts",
               "docker"]
TEXT_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".env", ".md", ".json",
                 ".txt", ""}
AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/:@'\"]+:(?P<pw>[^\s@/'\"]+)@", re.I)


def files() -> list[Path]:
    out = [REPO / name for name in ("pyproject.toml", "README.md", "ARCHITECTURE.md")]
    for d in SOURCE_DIRS:
        out += [p for p in (REPO / d).rglob("*") if p.is_file()
                and p.suffix in TEXT_SUFFIXES and "results" not in p.parts
                and "__pycache__" not in p.parts]
    return [p for p in out if p.exists()]


def test_no_key_ids_or_literal_url_passwords() -> None:
    found = []
    for path in files():
        text = path.read_text(errors="replace")
        found += [f"{path.relative_to(REPO)}: key id" for _ in AWS_KEY_ID.finditer(text)]
        for m in URL_PASSWORD.finditer(text):
            pw = m.group("pw")
            if not pw.startswith("${") and pw not in ("***", "PASSWORD", "password", "pw"):
                found.append(f"{path.relative_to(REPO)}: password in {m.group(0)}")
    assert found == []


def test_boto3_is_never_given_explicit_keys() -> None:
    found = []
    for path in files():
        if path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg in ("aws_access_key_id", "aws_secret_access_key",
                                  "aws_session_token"):
                        found.append(f"{path.relative_to(REPO)}:{node.lineno} {kw.arg}")
    assert found == []


def test_the_scan_sees_the_sources() -> None:
    names = {p.name for p in files()}
    assert {"s3.py", "settings.py", "celery_app.py"} <= names
    assert AWS_KEY_ID.search("id " + "AKIA" + "Z" * 16) and URL_PASSWORD.search("redis://u:pw1@h")
