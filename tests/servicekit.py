"""The real services the tests share with each other (and with other test runs on the machine):
a fresh PostgreSQL database per user, a Redis database number claimed atomically, moto's S3/SQS
server on a free loopback port, and `doctriage` subprocesses (workers) started and stopped alike.

One implementation for every suite: picking "an empty DB number" without a claim let two suites
running at once take the same number and consume each other's messages."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bench.harness import stop_process_group

PG_ADMIN = os.environ.get("DOCTRIAGE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("DOCTRIAGE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
CLAIM_KEY = "doctriage-test-claim"
REPO = Path(__file__).resolve().parents[1]
DOCTRIAGE_BIN = str(Path(sys.executable).parent / "doctriage")


@contextlib.contextmanager
def fresh_pg_database(prefix: str = "doctriage_test") -> Iterator[str]:
    """A new, empty database (psycopg2 URL); dropped, with its connections, afterwards."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg2.connect(PG_ADMIN, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@contextlib.contextmanager
def migrated_pg_database(prefix: str = "doctriage_test") -> Iterator[str]:
    """A fresh database (as above) with the store's schema already applied."""
    from db.session import make_engine, migrate

    with fresh_pg_database(prefix) as url:
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url


@contextlib.contextmanager
def spare_redis_db(low: int = 1, high: int = 15) -> Iterator[str]:
    """An empty Redis DB number, claimed with SET NX so a concurrent run picks another one;
    flushed afterwards. The shared server is never restarted and FLUSHALL is never used."""
    import redis

    token = uuid.uuid4().hex
    client = None
    for db in range(high, low - 1, -1):
        candidate = redis.Redis.from_url(f"{REDIS}/{db}")
        try:
            if (
                candidate.dbsize() == 0
                and candidate.set(CLAIM_KEY, token, nx=True)
                and candidate.dbsize() == 1
            ):
                client = candidate
                break
        except redis.ConnectionError as exc:
            pytest.skip(f"Redis not reachable: {exc}")
    if client is None:
        pytest.skip("no empty Redis database number to use")
    try:
        yield f"{REDIS}/{db}"
    finally:
        client.flushdb()


def priority_list(queue: str, level: int) -> str:
    """The Redis list kombu keeps for one priority level of a queue (level 0: the queue's own)."""
    return f"{queue}\x06\x16{level}" if level else queue


def wait_for(check: Any, timeout_s: float, what: str, logs: Mapping[str, Path]) -> None:
    """Poll `check()` until it holds; past `timeout_s`, fail the test with the logs' tails."""
    import time

    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {name}\n" + log.read_text(errors="replace")[-3000:]
                            for name, log in logs.items() if log.exists())
            pytest.fail(f"timed out waiting for {what}" + tails)
        time.sleep(0.2)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_server(env: Mapping[str, str] | None = None) -> Iterator[str]:
    """moto's real HTTP server (S3, SQS, ...) on a free loopback port; yields its endpoint URL.
    boto3 talks HTTP to it: no boto3 call is mocked. `env` (dummy AWS credentials, say) is set
    in os.environ while the server runs and restored afterwards."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


def start_doctriage(
    args: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO
) -> subprocess.Popen:
    """`doctriage ARGS` in the background, stdout and stderr to `log_path`, in a process group
    of its own so that `stop_process` reaches the worker's children too."""
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [DOCTRIAGE_BIN, *args], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group (a worker's warm shutdown), SIGKILL if it takes over 20 s."""
    stop_process_group(proc, 20)


# -- the workflow on the real services: fixtures, settings, waiting for the workers -----------


def pg_url_fixture(prefix: str) -> Any:
    """A module-scoped `pg_url` fixture (assign it to that name): a fresh, unmigrated database
    named from `prefix`, dropped after the module."""

    @pytest.fixture(scope="module")
    def pg_url() -> Iterator[str]:
        with fresh_pg_database(prefix) as url:
            yield url

    return pg_url


def redis_url_fixture() -> Any:
    """A module-scoped `redis_url` fixture (assign it to that name): a claimed spare Redis DB."""

    @pytest.fixture(scope="module")
    def redis_url() -> Iterator[str]:
        with spare_redis_db() as url:
            yield url

    return redis_url


def worker_env(
    home: Path, database_url: str, broker_url: str, model_dir: Path, **settings: str
) -> dict[str, str]:
    """os.environ plus what a worker or `doctriage submit` needs; `settings` are more DOCTRIAGE_*
    values by lower-case name (reroute_below="0.75"). One tesseract thread per OCR call: the
    tests share a few cores."""
    env = {
        **os.environ,
        "DOCTRIAGE_HOME": str(home),
        "DOCTRIAGE_DATABASE_URL": database_url,
        "DOCTRIAGE_BROKER_URL": broker_url,
        "DOCTRIAGE_MODEL_DIR": str(model_dir),
        "OMP_THREAD_LIMIT": "1",
    }
    env.update({f"DOCTRIAGE_{key.upper()}": value for key, value in settings.items()})
    return env


def use_settings(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> None:
    """This process's doctriage settings from the DOCTRIAGE_* keys of `env` (cache cleared), so
    an in-process `submit` talks to the same store and broker as the workers."""
    from doctriage.settings import get_settings

    for key, value in env.items():
        if key.startswith("DOCTRIAGE_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()


def wait_until_final(
    database_url: str,
    workers: Mapping[str, subprocess.Popen],
    logs: Mapping[str, Path],
    *,
    timeout_s: float,
    count: int | None = None,
) -> list[str]:
    """Poll the store until `count` documents (or, if None, all there are and at least one) are
    DONE or FAILED; return their states. A worker that dies or a timeout fails the test with
    the tails of the workers' logs."""
    import time

    from sqlalchemy import select

    from db.models import Document
    from db.session import make_engine, session_factory, session_scope

    def tails(chars: int) -> str:
        return "".join(f"\n--- {name}\n" + logs[name].read_text(errors="replace")[-chars:]
                       for name in logs)

    engine = make_engine(database_url)
    sessions = session_factory(engine)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with session_scope(sessions) as s:
                states = [d.state for d in s.execute(select(Document)).scalars()]
            enough = len(states) == count if count is not None else bool(states)
            if enough and all(st in ("DONE", "FAILED") for st in states):
                return states
            for name, proc in workers.items():
                assert proc.poll() is None, f"worker {name} exited" + tails(3000)
            if time.monotonic() > deadline:
                pytest.fail(f"documents not finished in {timeout_s}s: {states}" + tails(2000))
            time.sleep(0.5)
    finally:
        engine.dispose()
