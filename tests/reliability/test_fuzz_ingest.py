"""Bounded fuzzing of ingestion: real PDFs from the shared realdocs folder, mutated by
hypothesis (byte flips, truncations, splices from another document, zeroed and repeated
ranges), fed to pipelines.pages.iter_pages in a child process with a timeout. The outcome must
be pages and/or one DocumentError line - never another exception, a crash of the process, or a
hang past the limit. Default run: a few dozen examples; `-m slow`: a few hundred, OCR on."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relkit import REPO, realdoc_pdfs, record_result

CHILD = Path(__file__).with_name("fuzz_child.py")
HANG_S = 60.0  # per document: well past the slowest legitimate parse at these options


class Child:
    """The ingestion child, restarted after a crash or a hang (both recorded as findings)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.started = 0

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_THREAD_LIMIT": "1"}
        self.started += 1
        return subprocess.Popen([sys.executable, str(CHILD)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env=env, cwd=REPO)

    def run(self, request: dict, timeout: float = HANG_S) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            return {"hang": f"no answer in {timeout:g} s"}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(10)
            self.proc = None
            return {"crash": f"child died with status {code}"}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    paths = realdoc_pdfs(limit=8, max_bytes=250_000)
    if not paths:
        pytest.skip("realdocs not found (set DOCTRIAGE_REALDOCS)")
    return [p.read_bytes() for p in paths]


@pytest.fixture(scope="module")
def child():
    c = Child()
    yield c
    c.close()


mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("splice"), st.floats(0, 1), st.floats(0, 1), st.integers(1, 4096)),
    st.tuples(st.just("zero"), st.floats(0, 1), st.integers(1, 2048)),
    st.tuples(st.just("repeat"), st.floats(0, 1), st.integers(1, 512), st.integers(2, 8)),
)


def mutate(data: bytes, other: bytes, ops: list[tuple]) -> bytes:
    buf = bytearray(data)
    for op in ops:
        n = max(1, len(buf))
        at = min(int(op[1] * n), n - 1)
        if op[0] == "flip":  # xor a run of bytes
            for i in range(at, min(at + op[3], len(buf))):
                buf[i] ^= op[2]
        elif op[0] == "truncate":
            del buf[at:]
        elif op[0] == "splice":  # a chunk of another real PDF dropped in
            src = min(int(op[2] * len(other)), max(0, len(other) - 1))
            buf[at:at] = other[src : src + op[3]]
        elif op[0] == "zero":
            buf[at : at + op[2]] = b"\x00" * len(buf[at : at + op[2]])
        elif op[0] == "repeat":
            buf[at:at] = bytes(buf[at : at + op[2]]) * (op[3] - 1)
    return bytes(buf)


def _fuzz(seeds: list[bytes], child: Child, tmp: Path, examples: int, request: dict,
          name: str) -> None:
    outcomes = {"pages": 0, "document_error": 0}
    findings: list[str] = []
    t0 = time.perf_counter()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(0, len(seeds) - 1), st.integers(0, len(seeds) - 1),
           st.lists(mutation, min_size=1, max_size=4))
    def check(i: int, j: int, ops: list[tuple]) -> None:
        data = mutate(seeds[i], seeds[j], ops)
        path = tmp / "fuzz.pdf"
        path.write_bytes(data)
        got = child.run({**request, "path": str(path)})
        if "error" in got and got["error"] is not None:
            assert "\n" not in got["error"]
            outcomes["document_error"] += 1
        elif "error" in got:
            outcomes["pages"] += 1
        else:
            findings.append(f"seed {i} ops {ops}: {got}")
            (tmp / f"finding-{len(findings)}.pdf").write_bytes(data)
        assert "error" in got, got

    try:
        check()
    finally:
        record_result({"fault": f"fuzz: mutated realdocs PDFs ({name})", "kind": "fuzz",
                       "pages_in": examples, "pages_out": sum(outcomes.values()),
                       "duplicates": 0, "recover_s": None,
                       "outcome": f"{outcomes['pages']} read, {outcomes['document_error']} "
                                  f"DocumentError, {len(findings)} crash/hang/other; "
                                  f"child started {child.started}x; "
                                  f"{time.perf_counter() - t0:.1f} s"})
    assert findings == []


def test_fuzz_mutated_pdfs_small(seeds: list[bytes], child: Child, tmp_path: Path) -> None:
    _fuzz(seeds, child, tmp_path, 40, {"ocr_mode": "text", "dpi": 50}, "40 examples, text")


@pytest.mark.slow
def test_fuzz_mutated_pdfs_large(seeds: list[bytes], child: Child, tmp_path: Path) -> None:
    _fuzz(seeds, child, tmp_path, 300, {"ocr_mode": "auto", "dpi": 72, "ocr_timeout_s": 10},
          "300 examples, OCR on")


def test_child_reports_hangs_and_crashes(child: Child, tmp_path: Path) -> None:
    """The harness itself: a garbage file is a DocumentError, a child that dies mid-request is
    a crash, and one that cannot answer in time is a hang."""
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"%PDF-1.7\n" + os.urandom(256))
    assert child.run({"path": str(junk)})["error"].startswith(f"{junk}: ")
    stand_in = Child()
    try:
        stand_in.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.readline(); sys.exit(3)"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert stand_in.run({"path": str(junk)}) == {"crash": "child died with status 3"}
        stand_in.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert "hang" in stand_in.run({"path": str(junk)}, timeout=0.5)
        assert stand_in.proc is None  # the hung child was killed
    finally:
        stand_in.close()
