"""A DOCTRIAGE_DATABASE_URL that cannot be used (a server that refuses the connection, a value
that is not a URL, an unknown scheme) stops every command that opens the store with one line on
stderr, `error: ...`, and exit status 2: no traceback, and no model built or loaded first.

The commands run as the installed console script (as a user runs them), in parallel: each start
imports the CLI, several seconds apiece."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from doctriage import wiring
from doctriage.settings import Settings

EXE = str(Path(sys.executable).with_name("doctriage"))
BAD_URLS = {
    "refused": "postgresql://doctriage:s3cret-pw@127.0.0.1:1/x",
    "malformed": "not a url",
    "unsupported": "foo://x",
}
EXPECTED = {
    "refused": "error: cannot open the database postgresql://doctriage:***@127.0.0.1:1/x: "
    "connection to server at",
    "malformed": "error: DOCTRIAGE_DATABASE_URL is not a database URL",
    "unsupported": "error: DOCTRIAGE_DATABASE_URL: unsupported database 'foo'",
}


def _doctriage(args: list[str], url: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("DOCTRIAGE_LOG_JSON", None)
    env.pop("DOCTRIAGE_MODEL_DIR", None)
    env.update(
        DOCTRIAGE_HOME=str(home),
        DOCTRIAGE_DATABASE_URL=url,
        DOCTRIAGE_BROKER_URL="redis://127.0.0.1:1/0",  # never reached: the store fails first
    )
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300, env=env,
                          cwd=home)


def test_every_command_fails_on_a_bad_database_in_one_line(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")  # never opened
    cases = [(kind, cmd) for kind in BAD_URLS for cmd in (["status"], ["run", str(docs)])]
    cases += [("refused", ["submit", str(docs)]), ("unsupported", ["worker"])]
    homes = []
    for i, _ in enumerate(cases):
        homes.append(tmp_path / f"home{i}")
        homes[-1].mkdir()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c, h: _doctriage(c[1], BAD_URLS[c[0]], h), cases, homes))
    for (kind, cmd), home, out in zip(cases, homes, results, strict=True):
        where = f"doctriage {cmd[0]} with {kind} URL"
        lines = out.stderr.splitlines()
        assert out.returncode == 2, f"{where}: exit {out.returncode}\n{out.stderr}"
        assert len(lines) == 1, f"{where}: stderr is not one line:\n{out.stderr}"
        assert lines[0].startswith(EXPECTED[kind]), f"{where}: {lines[0]}"
        assert "s3cret-pw" not in out.stderr + out.stdout
        assert not (home / "models").exists(), f"{where}: built a model before opening the store"


@pytest.mark.parametrize("kind", sorted(BAD_URLS))
def test_store_raises_a_one_line_wiring_error(kind, tmp_path):
    settings = Settings(home=tmp_path, database_url=BAD_URLS[kind])
    with pytest.raises(wiring.WiringError) as caught:
        wiring.store(settings)
    message = str(caught.value)
    assert "\n" not in message and "s3cret-pw" not in message
    assert f"error: {message}".startswith(EXPECTED[kind])


def test_store_reports_an_unwritable_sqlite_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{blocker / 'sub' / 'd.db'}")
    with pytest.raises(wiring.WiringError, match=r"^cannot open the database sqlite:///"):
        wiring.store(settings)
