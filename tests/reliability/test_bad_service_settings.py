"""A broker or S3 setting that cannot be used stops every command that needs the service with
one line on stderr, `error: ...` naming the setting and the reason (passwords masked), and exit
status 2, within seconds: no traceback, no worker retrying a dead broker forever, no document
registered by `submit` before it finds it cannot enqueue, no model loaded by `run` before it
finds it cannot store artifacts (issue 16: start-up failures of every command).

DOCTRIAGE_BROKER_URL: a port nobody listens on, a value that is not a URL, an unknown
transport, for `submit`, `worker`, `backlog`, `watch` and `retry` (`status` and `run` never use
the broker). DOCTRIAGE_S3_ENDPOINT_URL with DOCTRIAGE_ARTIFACT_URL=s3://...: an endpoint that
refuses connections (with a password in it) or is not a URL, for `run`, `submit`, `worker` and
`watch`. The commands run as the installed console script, in parallel (as in
test_bad_database_url.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from doctriage import preflight, wiring
from doctriage.settings import Settings

EXE = str(Path(sys.executable).with_name("doctriage"))
SECRET = "s3cret-pw"
BROKERS = {
    "refused": f"redis://:{SECRET}@127.0.0.1:1/0",
    "malformed": "not a url",
    "unsupported": "foo://x",
}
BROKER_SAYS = {
    "refused": "error: cannot reach the broker redis://:***@127.0.0.1:1/0 (DOCTRIAGE_BROKER_URL): "
    "Error 111 connecting to 127.0.0.1:1. Connection refused.",
    "malformed": "error: DOCTRIAGE_BROKER_URL is not a broker URL (e.g. redis://",
    "unsupported": "error: DOCTRIAGE_BROKER_URL: unsupported broker 'foo' (use redis://",
}
ENDPOINTS = {"refused": f"http://minio:{SECRET}@127.0.0.1:1", "malformed": "not a url"}
S3_SAYS = {
    "refused": "error: cannot reach S3 at http://minio:***@127.0.0.1:1 "
    "(DOCTRIAGE_S3_ENDPOINT_URL) for DOCTRIAGE_ARTIFACT_URL=s3://artifacts/pages: "
    "Could not connect to the endpoint URL",
    "malformed": "error: DOCTRIAGE_S3_ENDPOINT_URL is not a URL (e.g. http://minio:9000): "
    "Invalid endpoint: not a url",
}


def _command(name: str, docs: Path) -> list[str]:
    return {
        "submit": ["submit", str(docs)],
        "worker": ["worker", "-Q", "ingest"],
        "backlog": ["backlog", str(docs)],
        "watch": ["watch", "s3://drops/in/", "--once"],
        "run": ["run", str(docs)],
        "retry": ["retry"],
    }[name]


# (setting, kind, command): every command that uses the service sees a refused one, and each
# other kind of bad value is seen by two commands.
CASES = [("broker", "refused", c) for c in ("submit", "worker", "backlog", "watch", "retry")]
CASES += [("broker", "malformed", c) for c in ("worker", "submit")]
CASES += [("broker", "unsupported", c) for c in ("backlog", "watch")]
CASES += [("s3", "refused", c) for c in ("run", "submit", "worker", "watch")]
CASES += [("s3", "malformed", c) for c in ("run", "worker")]


def _doctriage(args: list[str], env_extra: dict[str, str], home: Path) -> tuple[
        subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCTRIAGE_")}
    env.update(
        DOCTRIAGE_HOME=str(home),
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",  # moto-style dummies
        AWS_EC2_METADATA_DISABLED="true",
        **env_extra,
    )
    t0 = time.monotonic()
    out = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, env=env,
                         cwd=home)
    return out, time.monotonic() - t0


def _env(setting: str, kind: str, command: str) -> dict[str, str]:
    if setting == "broker":
        return {"DOCTRIAGE_BROKER_URL": BROKERS[kind]}
    env = {"DOCTRIAGE_ARTIFACT_URL": "s3://artifacts/pages",
           "DOCTRIAGE_S3_ENDPOINT_URL": ENDPOINTS[kind]}
    if command in ("submit", "worker", "retry"):
        env["DOCTRIAGE_BROKER_URL"] = "memory://"  # a broker that works: S3 is what fails
    return env


def _documents(home: Path) -> int:
    engine = create_engine(f"sqlite:///{home / 'doctriage.db'}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM documents")).scalar_one())
    finally:
        engine.dispose()


def test_every_command_fails_on_a_bad_broker_or_s3_setting_in_one_line(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")  # never opened
    homes = []
    for i, _ in enumerate(CASES):
        homes.append(tmp_path / f"home{i}")
        homes[-1].mkdir()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(
            lambda case, home: _doctriage(_command(case[2], docs), _env(*case), home),
            CASES, homes))
    for (setting, kind, command), home, (out, seconds) in zip(CASES, homes, results,
                                                              strict=True):
        where = f"doctriage {command} with a {kind} {setting} setting"
        lines = out.stderr.splitlines()
        assert out.returncode == 2, f"{where}: exit {out.returncode}\n{out.stderr[-3000:]}"
        assert len(lines) == 1, f"{where}: stderr is not one line:\n{out.stderr[-3000:]}"
        expected = (BROKER_SAYS if setting == "broker" else S3_SAYS)[kind]
        assert lines[0].startswith(expected), f"{where}: {lines[0]}"
        assert SECRET not in out.stderr + out.stdout, where
        assert not (home / "models").exists(), f"{where}: built a model before the check"
        if command == "submit":  # nothing registered that could never be enqueued
            assert _documents(home) == 0, f"{where}: registered documents before failing"
        # A liveness bound: a bad setting fails the command at once, not after a client's
        # own retries (minutes); generous for four commands starting at once on a loaded machine.
        assert seconds < 60, f"{where}: took {seconds:.1f} s"


# -- the checks themselves ---------------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize("scheme", ["redis", "rediss", "amqp"])
def test_a_broker_that_never_answers_fails_within_the_bound(silent_server: int,
                                                            scheme: str) -> None:
    settings = Settings(broker_url=f"{scheme}://u:{SECRET}@127.0.0.1:{silent_server}/0")
    t0 = time.monotonic()
    with pytest.raises(wiring.WiringError) as caught:
        preflight.check_broker(settings, timeout_s=1.0)
    # A liveness bound: the check gives up after its 1-s time-out, where the client's defaults
    # wait a minute or for ever; 10 s leaves room for a loaded machine (client set-up included).
    assert time.monotonic() - t0 < 10.0
    message = str(caught.value)
    assert message.startswith(f"cannot reach the broker {scheme}://u:***@127.0.0.1:"), message
    assert "\n" not in message and SECRET not in message


def test_an_s3_endpoint_that_never_answers_fails_within_the_bound(silent_server: int,
                                                                  tmp_path: Path,
                                                                  monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings(home=tmp_path, artifact_url="s3://artifacts/pages",
                        s3_endpoint_url=f"http://127.0.0.1:{silent_server}")
    t0 = time.monotonic()
    with pytest.raises(wiring.WiringError, match=r"^cannot reach S3 at http://127\.0\.0\.1:"):
        preflight.check_s3(settings, timeout_s=1.0)
    # A liveness bound: the check gives up after its 1-s time-out, where the client's defaults
    # wait a minute or for ever; 10 s leaves room for a loaded machine (client set-up included).
    assert time.monotonic() - t0 < 10.0


class _Forbidden(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_an_s3_endpoint_that_answers_passes(tmp_path: Path, monkeypatch) -> None:
    """Any answer will do: a 403 or a missing bucket is for the requests themselves to report
    (an ingest worker may put and get objects without the right to HeadBucket)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = HTTPServer(("127.0.0.1", 0), _Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        settings = Settings(home=tmp_path, artifact_url="s3://artifacts/pages",
                            s3_endpoint_url=f"http://127.0.0.1:{server.server_address[1]}")
        preflight.check_s3(settings, sources=["s3://drops/in/"], timeout_s=5.0)
    finally:
        server.shutdown()
        server.server_close()


def test_no_s3_in_use_checks_nothing(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, s3_endpoint_url="not a url")  # artifacts on disk
    preflight.check_s3(settings, sources=[str(tmp_path)])
    preflight.check_broker(Settings(home=tmp_path, broker_url=None))
    preflight.check_broker(Settings(home=tmp_path, broker_url="memory://"))


@pytest.mark.services
def test_a_live_redis_broker_passes(tmp_path: Path) -> None:
    from servicekit import spare_redis_db

    with spare_redis_db() as url:
        preflight.check_broker(Settings(home=tmp_path, broker_url=url))
