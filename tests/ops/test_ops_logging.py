"""Structured logs: one JSON object per line, the ids of the work in context, and no secret -
whether it sits in the message, an argument, a URL or a traceback."""

from __future__ import annotations

import io
import json
import logging

import pytest

from doctriage.logging_setup import MASK, configure_logging, env_secrets, redact
from workers import log_context

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
PG_PASSWORD = "s3cr3t-pg-pass"


@pytest.fixture
def json_log(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("DOCTRIAGE_DATABASE_URL", f"postgresql://dt:{PG_PASSWORD}@db:5432/dt")
    stream = io.StringIO()
    handler = configure_logging("DEBUG", json_lines=True, stream=stream)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_the_ids_in_context(json_log) -> None:
    log = logging.getLogger("workers.steps")
    log.info("outside any task")
    with log_context.bound(document_id=41, task="doctriage.ingest"):
        log.warning("page %d has no text layer", 3)
        with log_context.bound(page_ids=[7, 8]):
            log.info("classified", extra={"pages": 2})
    log.info("after")
    lines = _lines(json_log)
    assert [x["message"] for x in lines] == [
        "outside any task", "page 3 has no text layer", "classified", "after"]
    assert "document_id" not in lines[0] and "document_id" not in lines[3]
    assert lines[1]["document_id"] == 41 and lines[1]["level"] == "WARNING"
    assert lines[1]["logger"] == "workers.steps" and lines[1]["task"] == "doctriage.ingest"
    assert lines[2]["document_id"] == 41 and lines[2]["page_ids"] == [7, 8]
    assert lines[2]["pages"] == 2
    assert lines[0]["ts"].endswith("+00:00")


def test_no_secret_reaches_the_log(json_log) -> None:
    log = logging.getLogger("pipelines.s3")
    log.info("connecting to %s", f"postgresql://dt:{PG_PASSWORD}@db:5432/dt")
    log.info("broker redis://:hunter2-redis@redis:6379/0 is down")
    log.info("credentials %s / %s", KEY_ID, SECRET_KEY)
    log.info("config aws_secret_access_key=%s password: 'tops3cret'", "another-secret-1")
    try:
        raise ConnectionError(f"could not sign with {SECRET_KEY}")
    except ConnectionError:
        log.exception("upload failed")
    out = json_log.getvalue()
    for secret in (PG_PASSWORD, "hunter2-redis", KEY_ID, SECRET_KEY, "another-secret-1",
                   "tops3cret"):
        assert secret not in out, secret
    lines = _lines(json_log)
    assert lines[0]["message"] == f"connecting to postgresql://dt:{MASK}@db:5432/dt"
    assert lines[1]["message"] == f"broker redis://:{MASK}@redis:6379/0 is down"
    assert "ConnectionError" in lines[4]["exc"] and MASK in lines[4]["exc"]


def test_env_secrets_and_redact_leave_ordinary_text_alone() -> None:
    env = {"AWS_SECRET_ACCESS_KEY": SECRET_KEY, "DOCTRIAGE_BROKER_URL": "redis://redis:6379/0",
           "DOCTRIAGE_DATABASE_URL": f"postgresql://u:{PG_PASSWORD}@h/db", "HOME": "/root"}
    assert env_secrets(env) == [SECRET_KEY, PG_PASSWORD]
    text = "document 12 (s3://inbox/a b.pdf) page 3: 412 words, ocr, 3.1 s, http://minio:9000"
    assert redact(text, env_secrets(env)) == text


def test_text_lines_carry_the_ids_too() -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", json_lines=False, stream=stream)
    try:
        with log_context.bound(document_id=5):
            logging.getLogger("workers.tasks").info("ingested")
    finally:
        logging.getLogger().removeHandler(handler)
    assert "workers.tasks [document_id=5] ingested" in stream.getvalue()
