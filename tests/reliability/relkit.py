"""Helpers for the reliability and security tests (imported as `relkit`: a unique module name,
since tests/ folders are not packages): a tiny model bundle, generated documents, and the
real-services harness the fault tests share (worker subprocesses, PostgreSQL backends and Redis
clients to cut). The fresh database, spare Redis DB number and moto server come from
`servicekit`, shared with every other suite."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import modelkit
import pytest
from servicekit import PG_ADMIN, start_doctriage

REPO = Path(__file__).resolve().parents[2]
REALDOCS = Path(
    os.environ.get("DOCTRIAGE_REALDOCS", REPO.parent / "shared" / "datasets" / "realdocs")
)
LABELS = ["contract", "form", "invoice", "receipt", "resume", "scientific_publication"]


# -- model -------------------------------------------------------------------------------------


def build_tiny_bundle(path: Path, *, seed: int = 0) -> Path:
    """The shared tiny bundle, with the vocabulary of these tests' documents."""
    texts = ["statement invoice total amount due page heading account receipt contract",
             "resume experience education form signature abstract introduction quarterly"]
    return modelkit.build_tiny_bundle(path, seed=seed, name="tiny-reliability", texts=texts)


def hostile_pickle(marker: Path) -> bytes:
    """Protocol-0 pickle bytes that create `marker` when unpickled (open(marker, "w")). Written
    out by hand: nothing here imports pickle, and a loader that refuses it never runs it."""
    path = str(marker).replace("\\", "\\\\").replace("'", "\\'")
    return f"cbuiltins\nopen\n(S'{path}'\nS'w'\ntR.".encode()


# -- documents ---------------------------------------------------------------------------------


def text_pdf_bytes(pages: int, tag: str = "doc", encrypt: str | None = None,
                   pagesize: tuple[float, float] = (612, 792)) -> bytes:
    """A born-digital PDF (text layer: no OCR cost): each page names its document and number."""
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=pagesize, encrypt=encrypt)
    for n in range(1, pages + 1):
        c.setFont("Helvetica", 14)
        c.drawString(72, pagesize[1] - 72, f"{tag} page {n} heading")
        c.drawString(72, pagesize[1] - 100, "Invoice number 4711 total amount due in thirty days")
        c.drawString(72, pagesize[1] - 122, "Quarterly statement of account for the customer")
        c.showPage()
    c.save()
    return buf.getvalue()


def write_corpus(folder: Path, sizes: list[int], prefix: str = "doc") -> list[Path]:
    """One text PDF per entry of `sizes` (its page count)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, n in enumerate(sizes):
        path = folder / f"{prefix}-{i:03d}-{n}p.pdf"
        path.write_bytes(text_pdf_bytes(n, tag=f"{prefix}{i}"))
        out.append(path)
    return out


def realdoc_pdfs(limit: int = 20, max_bytes: int = 400_000) -> list[Path]:
    """Small real PDFs from the shared realdocs folder (read in place, never copied)."""
    import csv

    manifest = REALDOCS / "manifest.csv"
    if not manifest.exists():
        return []
    with open(manifest, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["path"].lower().endswith(".pdf")]
    rows = [r for r in rows if int(r["bytes"]) <= max_bytes]
    rows.sort(key=lambda r: (int(r["bytes"]), r["path"]))
    step = max(1, len(rows) // limit)
    return [REALDOCS / r["path"] for r in rows[::step][:limit]]


def submit_in_process(
    monkeypatch: pytest.MonkeyPatch, folder: Path, home: Path, database_url: str
) -> tuple[Any, list[int]]:
    """`doctriage submit FOLDER` run in this process against `database_url`, with the ingest
    task's `apply_async` replaced by a list (no broker is reached): the CLI result and the ids
    queued."""
    from typer.testing import CliRunner

    from doctriage.cli import app
    from doctriage.settings import get_settings
    from workers.tasks import ingest

    queued: list[int] = []
    monkeypatch.setattr(ingest, "apply_async", lambda args, **_: queued.append(args[0]))
    monkeypatch.setenv("DOCTRIAGE_HOME", str(home))
    monkeypatch.setenv("DOCTRIAGE_DATABASE_URL", database_url)
    monkeypatch.setenv("DOCTRIAGE_BROKER_URL", "memory://")  # never used: apply_async is replaced
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["submit", str(folder)]), queued
    finally:
        get_settings.cache_clear()


# -- services ----------------------------------------------------------------------------------


def pg_available() -> str | None:
    import psycopg2

    try:
        psycopg2.connect(PG_ADMIN, connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        return f"PostgreSQL not reachable: {' '.join(str(exc).split())}"
    return None


def terminate_backends(db_url: str) -> int:
    """pg_terminate_backend on every other connection to this database; returns how many."""
    import psycopg2

    name = db_url.rsplit("/", 1)[-1]
    conn = psycopg2.connect(PG_ADMIN, connect_timeout=5)
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (name,),
        )
        return int(cur.fetchone()[0])
    finally:
        conn.close()


def redis_clients_of(url: str) -> list[str]:
    """Client ids connected to this URL's DB number (our workers only; CLIENT LIST says db=N)."""
    import redis

    db = int(url.rsplit("/", 1)[-1])
    admin = redis.Redis.from_url(url)
    me = admin.client_id()
    return [str(c["id"]) for c in admin.client_list()
            if int(c.get("db", -1)) == db and int(c["id"]) != me]


def kill_redis_clients(url: str) -> int:
    """CLIENT KILL of every connection on our DB number: what a Redis restart does to them."""
    import redis

    admin = redis.Redis.from_url(url)
    killed = 0
    for cid in redis_clients_of(url):
        with contextlib.suppress(redis.ResponseError):
            killed += int(admin.execute_command("CLIENT", "KILL", "ID", cid))
    return killed


# -- worker processes --------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@dataclass
class Cluster:
    """Worker subprocesses sharing one environment; every one is stopped by `close()`."""

    env: dict[str, str]
    logs: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, *args: str) -> Proc:
        log = self.logs / f"{name}-{len(self.procs)}.log"
        # cwd: a beat writes its schedule file there; keep it out of the repository.
        popen = start_doctriage(list(args), self.env, log, cwd=self.logs)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def worker(self, name: str, queues: str, concurrency: int = 1, *extra: str) -> Proc:
        return self.start(name, "worker", "--queues", queues, "-c", str(concurrency), *extra)

    def wait_ready(self, proc: Proc, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
            # The whole log: at DEBUG a worker can write far more than a tail before we look.
            if proc.log.exists() and " ready." in proc.log.read_text(errors="replace"):
                return
            time.sleep(0.3)
        raise RuntimeError(f"{proc.name} not ready in {timeout}s:\n{proc.tail()}")

    @staticmethod
    def kill(proc: Proc, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, sig)
        if sig == signal.SIGKILL:
            proc.popen.wait(10)

    def close(self) -> None:
        for proc in self.procs:
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(10)
            # A killed group may leave children of its own: make sure none survive.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGKILL)


# -- results -----------------------------------------------------------------------------------


def record_result(row: dict[str, Any]) -> None:
    """Append a fault/bad-input row to $DOCTRIAGE_FAULTS_RESULTS (bench/faults.py sets it)."""
    out = os.environ.get("DOCTRIAGE_FAULTS_RESULTS")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
