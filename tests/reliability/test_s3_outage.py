"""An S3 endpoint down for 60 s during ingest: every document ends DONE, none FAILED, no page
predicted twice. Real services: PostgreSQL, Redis, moto's S3 server, and `doctriage worker`
subprocesses (ingest, classify, beat with the reconcile schedule).

Documents live on moto S3; page artifacts in a local folder (only ingest sees the outage) or, in
the third case, on the same endpoint (classify reads them: its tasks may run out of retries too,
and their pages come back through the reconciler as well). The endpoint goes down as soon as
the first document is ingested (`doctriage watch --once` has listed and enqueued them all):
- "refused": the server is stopped (connections refused) and started again on the same port
  with the same objects (moto's state lives in this process);
- "hang": a moto server process is paused with SIGSTOP (connections accepted, never answered)
  and resumed with SIGCONT.
Ingest tasks retry with backoff (workers.failures.is_transient); a document whose task retries
run out while the endpoint is down ends FAILED with failure_kind 'transient', and the reconciler
sends it back to ingest after its backoff (workers.retrying). The reconcile and retry settings
are the shipped defaults (read from doctriage.settings.Settings); `recover_s` in the result row
is the time from the endpoint's return to every document final.

Run with `pytest -m faults tests/reliability/test_s3_outage.py`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from relkit import record_result, text_pdf_bytes
from servicekit import DOCTRIAGE_BIN, free_port
from sqlalchemy import func, select
from test_faults import Harness, harness  # noqa: F401  (the fixture)

from db.models import Document, Page
from db.session import session_scope
from doctriage.settings import Settings

pytestmark = [pytest.mark.faults, pytest.mark.services]

OUTAGE_S = 60.0
SIZES = [8] * 24  # 192 pages
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}
# The shipped defaults, whatever they are today (the Harness shortens them for other faults).
DEFAULTS = {f"DOCTRIAGE_{name.upper()}": str(Settings.model_fields[name].default)
            for name in ("visibility_timeout_s", "reconcile_every_s", "stuck_after_s",
                         "max_attempts", "retry_backoff_s", "retry_backoff_max_s")
            if name in Settings.model_fields}


class Endpoint:
    """A moto S3 endpoint on a fixed port that can be taken down and brought back."""

    def __init__(self, how: str) -> None:
        self.how, self.port = how, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: object | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.how == "refused":
            from moto.server import ThreadedMotoServer

            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port,
                                              verbose=False)
            self._server.start()
        else:
            moto = str(Path(sys.executable).with_name("moto_server"))
            self._proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(self.port)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True)
        self._wait_up()

    def _wait_up(self, timeout: float = 60.0) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=2).close()
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def down(self) -> None:
        if self.how == "refused":
            self._server.stop()  # type: ignore[attr-defined]
        else:
            assert self._proc is not None
            os.kill(self._proc.pid, signal.SIGSTOP)

    def back(self) -> None:
        if self.how == "refused":
            self.start()  # a new server on the same port; the objects are still there
        else:
            assert self._proc is not None
            os.kill(self._proc.pid, signal.SIGCONT)
            self._wait_up()

    def close(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGCONT)
                self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait(10)
        elif self._server is not None:
            with contextlib.suppress(Exception):
                self._server.stop()  # type: ignore[attr-defined]


@pytest.fixture
def endpoint(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    ep = Endpoint(request.param)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in AWS.items():
            mp.setenv(key, value)
        ep.start()
        try:
            yield ep
        finally:
            ep.close()


@pytest.mark.parametrize(("endpoint", "artifacts"), [
    ("refused", "local"), ("hang", "local"), ("refused", "s3"),
], indirect=["endpoint"], ids=["refused", "hang", "refused-artifacts-on-s3"])
def test_s3_endpoint_down_60s_during_ingest_heals(harness, endpoint: Endpoint,  # noqa: F811
                                                  artifacts: str, tmp_path: Path) -> None:
    import boto3

    env = {**AWS, **DEFAULTS, "DOCTRIAGE_S3_ENDPOINT_URL": endpoint.url}
    if artifacts == "s3":  # classify reads every page from the endpoint too
        env["DOCTRIAGE_ARTIFACT_URL"] = "s3://outage/artifacts"
    h: Harness = harness(env)
    s3 = boto3.client("s3", endpoint_url=endpoint.url, region_name="us-east-1")
    s3.create_bucket(Bucket="outage")
    for i, n in enumerate(SIZES):
        s3.put_object(Bucket="outage", Key=f"in/doc-{i:03d}.pdf", Body=text_pdf_bytes(n, f"o{i}"))
    h.maintenance_worker()
    h.classify_worker()
    h.ingest_worker()
    t_start = time.monotonic()
    watch = subprocess.Popen([DOCTRIAGE_BIN, "watch", "s3://outage/in/", "--once"], env=h.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=tmp_path)
    # Down as soon as the first document is ingested: the listing is done (the watcher needs S3
    # no more) and the rest of the ingest runs into the outage.
    h.wait_for("the first document ingested",
               lambda s: s.docs.get("INGESTED", 0) + s.docs.get("DONE", 0) > 0, 120, poll=0.02)
    endpoint.down()
    t_down = time.monotonic()
    _, err = watch.communicate(timeout=120)
    assert watch.returncode == 0, err
    ingested_before = sum(v for k, v in h.snapshot().docs.items() if k in ("INGESTED", "DONE"))
    # Watch the outage: how many documents ran out of task retries while the endpoint was down.
    failed_during = 0
    while (left := OUTAGE_S - (time.monotonic() - t_down)) > 0:
        failed_during = max(failed_during, h.snapshot().docs.get("FAILED", 0))
        time.sleep(min(left, 1.0))
    endpoint.back()
    t_back = time.monotonic()
    h.wait_finished(len(SIZES), sum(SIZES), timeout=240)
    t_done = time.monotonic()
    result = h.verify(len(SIZES), sum(SIZES))  # every document DONE, 0 duplicates
    with session_scope(h.sessions) as s:
        rows = s.execute(select(Document.attempts, Document.failed_attempts)).all()
        pages_retried = s.execute(select(func.count()).select_from(Page)
                                  .where(Page.failed_attempts > 0)).scalar_one()
    logs = "".join(p.tail(10**7) for p in h.cluster.procs)
    record_result({
        "fault": f"S3 endpoint down {OUTAGE_S:.0f} s during ingest ({endpoint.how}, "
                 f"artifacts {artifacts})",
        "kind": "fault", "pages_in": sum(SIZES), "pages_out": result["pages_out"],
        "duplicates": result["duplicates"], "recover_s": round(t_done - t_back, 1),
        "run_s": round(t_done - t_start, 1),
        "documents_ingested_before_outage": ingested_before,
        "documents_failed_during_outage": failed_during,
        "documents_retried_by_reconciler": sum(r.failed_attempts > 0 for r in rows),
        "max_failed_attempts": max(r.failed_attempts for r in rows),
        "pages_retried_by_reconciler": pages_retried,
        "ingest_claims": sum(r.attempts for r in rows),
        "task_retries": logs.count(" retry: Retry in "),
        "settings": {k: v for k, v in DEFAULTS.items()},
    })
    print(f"\n{endpoint.how}, artifacts {artifacts}: endpoint back -> all DONE in "
          f"{t_done - t_back:.1f} s; "
          f"{ingested_before} ingested before it, {failed_during} FAILED during it; "
          f"{sum(r.failed_attempts > 0 for r in rows)} documents and {pages_retried} pages "
          "retried by the reconciler")
