"""Transient or permanent (workers.failures.is_transient): an S3 endpoint that is unreachable,
slow or throttling is retried, not recorded as a FAILED document; and error text stored on a
document (and shown in a run's summary) never carries the endpoint URL's password."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from relkit import write_corpus
from sqlalchemy.exc import OperationalError

from classifier.stage_batcher import BatcherStopped
from db.models import Document
from db.repository import register_document
from db.session import session_scope
from pipelines.errors import DocumentError
from pipelines.s3 import ObjectChanged
from pipelines.sources import DocumentRef, path_to_uri, sha256_file
from workers import steps, tasks
from workers.embedded import run_embedded
from workers.failures import is_transient
from workers.redaction import stored_error

SECRET = "s3cr3t-Pa55word"
ENDPOINT = f"http://minio:{SECRET}@minio.internal:9000/artifacts/doc/1/page-0001.json"


def _client_error(code: str, status: int | None = None) -> ClientError:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": code}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "PutObject")


def _error_id(e: BaseException) -> str:
    """A test id: the exception's type, and an S3 error's code."""
    return type(e).__name__ + (f"-{e.response['Error']['Code']}" if isinstance(e, ClientError)
                               else "")


@pytest.mark.parametrize("exc", [
    EndpointConnectionError(endpoint_url=ENDPOINT),
    ConnectTimeoutError(endpoint_url=ENDPOINT),
    ReadTimeoutError(endpoint_url=ENDPOINT),
    ConnectionClosedError(endpoint_url=ENDPOINT),
    _client_error("SlowDown", 503),
    _client_error("ServiceUnavailable"),
    _client_error("InternalError"),
    _client_error("RequestTimeout", 400),
    _client_error("Throttling", 400),
    _client_error("WhateverTheProxySaid", 502),
    _client_error("", 500),
    OperationalError("SELECT 1", {}, Exception("server closed the connection")),
    RedisConnectionError("Error 111 connecting to redis:6379"),
    KombuOperationalError("broker gone"),
    ConnectionResetError("reset by peer"),
    TimeoutError("timed out"),
    BatcherStopped("shutting down"),
], ids=_error_id)
def test_transient_errors(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    _client_error("AccessDenied", 403),
    _client_error("NoSuchBucket", 404),
    _client_error("InvalidAccessKeyId", 403),
    _client_error("NoSuchKey"),
    NoCredentialsError(),
    ParamValidationError(report="bad key"),
    DocumentError("a.pdf", "truncated PDF"),
    ObjectChanged("s3://b/a.pdf: object replaced or deleted since listed (412)"),
    ValueError("a bug"),
    LookupError("document 7 does not exist"),
], ids=_error_id)
def test_permanent_errors(exc: BaseException) -> None:
    assert not is_transient(exc)


class FlakyArtifacts:
    """An artifact store whose first `failures` puts raise `exc` (then it works)."""

    def __init__(self, inner: Any, exc: BaseException, failures: int = 10**9) -> None:
        self.inner, self.exc, self.failures, self.calls = inner, exc, failures, 0

    def put(self, key: str, data: bytes) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)


def _one_document(emb: Any, folder: Path, pages: int) -> int:
    """A generated PDF of `pages` pages written to `folder` and registered: its document id."""
    (path,) = write_corpus(folder, [pages])
    with session_scope(emb.ctx.sessions) as s:
        return register_document(s, path_to_uri(path), sha256=sha256_file(path))[0]


def _doc(emb: Any, doc_id: int) -> tuple[str, str | None]:
    with session_scope(emb.ctx.sessions) as s:
        d = s.get(Document, doc_id)
        return d.state, d.error


@pytest.fixture
def task_env(monkeypatch: pytest.MonkeyPatch, make_embedded):
    """The real ingest task run eagerly (Celery's apply: retries run at once, in-process) on an
    embedded store; the classify messages it would send are collected instead."""
    emb = make_embedded()
    sent: list[list[int]] = []
    monkeypatch.setattr(tasks.context, "step_context", lambda: emb.ctx)
    monkeypatch.setattr(tasks.classify, "apply_async",
                        lambda args, **_: sent.append(list(args[0])))
    return emb, sent


def test_ingest_step_leaves_the_document_ingesting_on_endpoint_error(
    tmp_path: Path, make_embedded
) -> None:
    emb = make_embedded()
    doc_id = _one_document(emb, tmp_path / "docs", pages=2)
    emb.ctx.artifacts = FlakyArtifacts(emb.ctx.artifacts, EndpointConnectionError(
        endpoint_url=ENDPOINT))
    with pytest.raises(EndpointConnectionError) as info:
        steps.ingest_document(emb.ctx, doc_id)
    assert is_transient(info.value)
    assert _doc(emb, doc_id) == ("INGESTING", None)  # for the retry or the reconciler


@pytest.mark.parametrize("exc", [
    EndpointConnectionError(endpoint_url=ENDPOINT),
    _client_error("SlowDown", 503),
], ids=["EndpointConnectionError", "SlowDown"])
def test_ingest_task_retries_a_transient_s3_error(tmp_path: Path, task_env,
                                                  exc: BaseException) -> None:
    emb, sent = task_env
    doc_id = _one_document(emb, tmp_path / "docs", pages=2)
    emb.ctx.artifacts = FlakyArtifacts(emb.ctx.artifacts, exc, failures=2)
    result = tasks.ingest.apply(args=(doc_id,))
    assert result.successful(), result.traceback
    assert _doc(emb, doc_id) == ("INGESTED", None)  # not FAILED: retried, then done
    assert result.result["state"] == "INGESTED" and sum(map(len, sent)) == 2


def test_ingest_task_fails_a_permanent_s3_error_at_once(tmp_path: Path, task_env) -> None:
    emb, sent = task_env
    doc_id = _one_document(emb, tmp_path / "docs", pages=2)
    flaky = FlakyArtifacts(emb.ctx.artifacts, _client_error("AccessDenied", 403))
    emb.ctx.artifacts = flaky
    result = tasks.ingest.apply(args=(doc_id,))
    assert result.failed() and flaky.calls == 1  # no retry
    state, error = _doc(emb, doc_id)
    assert state == "FAILED" and "AccessDenied" in error and not sent


def test_ingest_task_fails_once_retries_are_spent_without_leaking_the_password(
    tmp_path: Path, task_env
) -> None:
    emb, _ = task_env
    doc_id = _one_document(emb, tmp_path / "docs", pages=1)
    flaky = FlakyArtifacts(emb.ctx.artifacts, EndpointConnectionError(endpoint_url=ENDPOINT))
    emb.ctx.artifacts = flaky
    result = tasks.ingest.apply(args=(doc_id,))
    assert result.failed() and flaky.calls == tasks.ingest.max_retries + 1
    state, error = _doc(emb, doc_id)
    assert state == "FAILED" and "EndpointConnectionError" in error
    assert SECRET not in error and "minio:***@minio.internal:9000" in error


def test_stored_error_and_run_summary_mask_the_endpoint_password(
    tmp_path: Path, make_embedded
) -> None:
    emb = make_embedded()
    paths = write_corpus(tmp_path / "docs", [1])
    emb.ctx.artifacts = FlakyArtifacts(emb.ctx.artifacts, EndpointConnectionError(
        endpoint_url=ENDPOINT))
    summary = run_embedded(emb.ctx, emb.runtime,
                           [DocumentRef(path_to_uri(p), sha256=sha256_file(p)) for p in paths])
    assert summary.documents_by_state == {"FAILED": 1}
    (failed,) = summary.failed_documents
    assert "EndpointConnectionError" in failed["error"]
    assert SECRET not in failed["error"] and "minio:***@" in failed["error"]
    with session_scope(emb.ctx.sessions) as s:
        (doc,) = s.query(Document).all()
        assert SECRET not in doc.error and "minio:***@minio.internal" in doc.error
    assert SECRET not in str(summary.to_dict())


def test_a_document_error_naming_a_url_with_a_password_is_stored_masked(
    tmp_path: Path, make_embedded
) -> None:
    emb = make_embedded()
    doc_id = _one_document(emb, tmp_path / "docs", pages=1)

    def broken(_stream: Any, name: str, options: Any = None) -> Any:
        raise DocumentError(name, f"cannot fetch embedded font from {ENDPOINT}")
        yield  # pragma: no cover

    emb.ctx.iter_pages = broken
    result = steps.ingest_document(emb.ctx, doc_id)
    state, error = _doc(emb, doc_id)
    assert state == "FAILED" and SECRET not in error and "minio:***@" in error
    assert result.error == error


def test_stored_error_is_one_masked_line() -> None:
    text = f"boom\n  at {ENDPOINT}\n" + "x" * 3000
    out = stored_error(text)
    assert "\n" not in out and SECRET not in out and len(out) == 2000
    assert out.startswith("boom at http://minio:***@minio.internal:9000/")
