"""Progress bars are for a person at a terminal: with stderr redirected (a log file, a pipe, a
CI job) `synth` and `run` write no bar, so logs hold no '\\r' fragments; on a terminal the bar
is still drawn. The real commands, in subprocesses."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

DOCTRIAGE = str(Path(sys.executable).with_name("doctriage"))


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCTRIAGE_")}
    env["DOCTRIAGE_HOME"] = str(home)
    return env


def _stderr_on_a_terminal(args: list[str], env: dict[str, str]) -> bytes:
    """Run with stderr on a pseudo-terminal; return what was written to it."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(timeout=300) == 0
    return out


def test_synth_draws_a_bar_only_on_a_terminal(tmp_path: Path) -> None:
    args = [DOCTRIAGE, "synth", str(tmp_path / "piped"), "--per-class", "1", "--seed", "1"]
    piped = subprocess.run(args, capture_output=True, env=_env(tmp_path / "home"), timeout=300)
    assert piped.returncode == 0, piped.stderr
    assert b"\r" not in piped.stderr and b"synth:" not in piped.stderr
    assert b"16 documents" in piped.stdout  # the summary line is still there
    args[2] = str(tmp_path / "tty")
    assert b"\r" in _stderr_on_a_terminal(args, _env(tmp_path / "home"))


def test_run_with_stderr_redirected_writes_no_bar(tmp_path: Path, tiny_bundle: Path) -> None:
    env = _env(tmp_path / "home")
    docs = tmp_path / "docs"
    made = subprocess.run(
        [DOCTRIAGE, "synth", str(docs), "--per-class", "1", "--seed", "1",
         "--classes", "invoice,memo", "--scanned-fraction", "0"],
        capture_output=True, env=env, timeout=300,
    )
    assert made.returncode == 0, made.stderr
    out = subprocess.run([DOCTRIAGE, "run", str(docs), "--model", str(tiny_bundle)],
                         capture_output=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert b"documents: 2" in out.stdout
    assert b"\r" not in out.stderr, out.stderr[:300]
