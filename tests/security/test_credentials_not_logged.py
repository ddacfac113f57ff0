"""Credentials come from the environment and never reach the output: a real ingest worker and
`doctriage watch` run with AWS keys and a PostgreSQL password in their environment, at DEBUG
level, through a failure that logs a traceback; none of the secret values appears in anything
they print. (PostgreSQL here uses trust auth, so the password in the URL is carried, not needed.)"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from relkit import Cluster, pg_available, text_pdf_bytes
from servicekit import DOCTRIAGE_BIN, fresh_pg_database, moto_server, spare_redis_db
from sqlalchemy import select

pytestmark = pytest.mark.services

ACCESS_KEY_ID = "AKIAZQ3DOCTRIAGE7TST"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYdoctriageSECRET"
SESSION_TOKEN = "FwoGZXIvYXdzEDoaDdoctriageSessionTokenValue"
PG_PASSWORD = "pg-Pa55w0rd-doctriage"


@pytest.fixture
def moto() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


def test_worker_and_watch_never_print_credentials(moto: str, tmp_path: Path) -> None:
    import boto3

    from db.models import Document
    from db.session import make_engine, session_factory, session_scope

    if (reason := pg_available()) is not None:
        pytest.skip(reason)
    creds = {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
             "AWS_SESSION_TOKEN": SESSION_TOKEN, "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                      aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_KEY,
                      aws_session_token=SESSION_TOKEN)
    s3.create_bucket(Bucket="secrets-test")
    for i in range(2):
        s3.put_object(Bucket="secrets-test", Key=f"in/doc{i}.pdf", Body=text_pdf_bytes(1))
    s3.put_object(Bucket="secrets-test", Key="in/gone.pdf", Body=text_pdf_bytes(1))

    with fresh_pg_database("doctriage_sec") as plain_url, spare_redis_db() as broker:
        db_url = plain_url.replace("postgres@", f"postgres:{PG_PASSWORD}@", 1)
        env = {**os.environ, **creds, "DOCTRIAGE_HOME": str(tmp_path / "home"),
               "DOCTRIAGE_DATABASE_URL": db_url, "DOCTRIAGE_BROKER_URL": broker,
               "DOCTRIAGE_S3_ENDPOINT_URL": moto, "DOCTRIAGE_LOG_LEVEL": "DEBUG"}
        cluster = Cluster(env, tmp_path)
        try:
            watch = subprocess.run([DOCTRIAGE_BIN, "watch", "s3://secrets-test/in/", "--once"],
                                   env=env, capture_output=True, text=True, timeout=120)
            assert watch.returncode == 0, watch.stderr
            # Deleted after registration: the worker's failure path logs the error.
            s3.delete_object(Bucket="secrets-test", Key="in/gone.pdf")
            worker = cluster.worker("ingest", "ingest")
            cluster.wait_ready(worker)
            engine = make_engine(plain_url)
            deadline = time.monotonic() + 90
            while True:
                with session_scope(session_factory(engine)) as s:
                    states = sorted(d.state for d in s.execute(select(Document)).scalars())
                if len(states) == 3 and all(st in ("INGESTED", "DONE", "FAILED") for st in states):
                    break
                assert time.monotonic() < deadline, f"{states}\n{worker.tail()}"
                time.sleep(0.5)
            engine.dispose()
            status = subprocess.run([DOCTRIAGE_BIN, "status"], env=env, capture_output=True,
                                    text=True, timeout=60)
            bad_db = subprocess.run(
                [DOCTRIAGE_BIN, "status"], capture_output=True, text=True, timeout=60,
                env={**env, "DOCTRIAGE_DATABASE_URL": db_url.rsplit("/", 1)[0] + "/no_such_db"},
            )
        finally:
            cluster.close()
    worker_log = worker.log.read_text(errors="replace")
    outputs = {"worker": worker_log, "watch": watch.stdout + watch.stderr,
               "status": status.stdout + status.stderr, "bad-db": bad_db.stdout + bad_db.stderr}
    # Not vacuous: the worker logged at DEBUG and logged the failure it met.
    assert "DEBUG" in worker_log and "ObjectChanged" in worker_log
    assert states.count("FAILED") == 1
    assert bad_db.returncode != 0 and bad_db.stderr.strip()
    for where, text in outputs.items():
        for secret in (ACCESS_KEY_ID, SECRET_KEY, SESSION_TOKEN, PG_PASSWORD):
            assert secret not in text, f"{where} printed a credential"
