"""A document that failed for a transient reason heals: the ingest task records the failure's
kind, the reconcile task sends a transiently FAILED document whose backoff has passed back to
ingest, and `doctriage retry` (embedded: no broker) re-runs FAILED documents to DONE."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from relkit import write_corpus
from sqlalchemy import func, select, update

from db.models import Document, Page, Prediction, utcnow
from db.repository import mark_document, register_document
from db.session import make_engine, migrate, session_factory, session_scope
from db.states import DocumentState, FailureKind
from pipelines.sources import path_to_uri, sha256_file
from workers import tasks

DOCTRIAGE = str(Path(sys.executable).parent / "doctriage")
ENDPOINT = "http://127.0.0.1:9/bucket/doc.pdf"


class DownArtifacts:
    """An artifact store whose puts raise `exc` while `down` (then it works)."""

    def __init__(self, inner: Any, exc: BaseException) -> None:
        self.inner, self.exc, self.down, self.calls = inner, exc, True, 0

    def put(self, key: str, data: bytes) -> str:
        self.calls += 1
        if self.down:
            raise self.exc
        return self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)


def _register(sessions: Any, path: Path) -> int:
    with session_scope(sessions) as s:
        return register_document(s, path_to_uri(path), sha256=sha256_file(path))[0]


def _doc(sessions: Any, doc_id: int) -> Document:
    with session_scope(sessions) as s:
        doc = s.get(Document, doc_id)
        assert doc is not None
        return doc


@pytest.fixture
def task_env(monkeypatch: pytest.MonkeyPatch, make_embedded):
    """The real tasks run eagerly on an embedded store; the messages they send are collected."""
    emb = make_embedded()
    sent: dict[str, list[Any]] = {"ingest": [], "classify": []}
    monkeypatch.setattr(tasks.context, "step_context", lambda: emb.ctx)
    monkeypatch.setattr(tasks.ingest, "apply_async",
                        lambda args, **_: sent["ingest"].append(args[0]))
    monkeypatch.setattr(tasks.classify, "apply_async",
                        lambda args, **_: sent["classify"].append(list(args[0])))
    return emb, sent


def test_outage_longer_than_the_task_retries_heals_through_the_reconciler(
    tmp_path: Path, task_env
) -> None:
    """Retries spent while S3 is down: FAILED, transient; once the endpoint is back and the
    backoff has passed, the reconcile task sends it to ingest again and it is INGESTED."""
    emb, sent = task_env
    (path,) = write_corpus(tmp_path / "docs", [2])
    doc_id = _register(emb.ctx.sessions, path)
    store = DownArtifacts(emb.ctx.artifacts, EndpointConnectionError(endpoint_url=ENDPOINT))
    emb.ctx.artifacts = store
    assert tasks.ingest.apply(args=(doc_id,)).failed()
    doc = _doc(emb.ctx.sessions, doc_id)
    assert (doc.state, doc.failure_kind, doc.failed_attempts) == ("FAILED", "transient", 1)
    assert "EndpointConnectionError" in (doc.error or "")

    assert tasks.reconcile.apply().result["retried"] == 0  # its backoff has not passed yet
    with session_scope(emb.ctx.sessions) as s:  # ... now it has (no sleeping: move the row)
        s.execute(update(Document).where(Document.id == doc_id)
                  .values(updated_at=utcnow() - timedelta(hours=1)))
    store.down = False
    result = tasks.reconcile.apply()
    assert result.successful(), result.traceback
    assert result.result["retried"] == 1 and sent["ingest"] == [doc_id]
    assert _doc(emb.ctx.sessions, doc_id).state == "RECEIVED"
    assert tasks.ingest.apply(args=(doc_id,)).successful()  # the message the reconciler sent
    doc = _doc(emb.ctx.sessions, doc_id)
    assert (doc.state, doc.failure_kind, doc.error, doc.failed_attempts) == (
        "INGESTED", None, None, 1)
    assert sum(map(len, sent["classify"])) == 2


class DownReads:
    """An artifact store whose gets raise `exc` while `down`."""

    def __init__(self, inner: Any, exc: BaseException) -> None:
        self.inner, self.exc, self.down = inner, exc, True

    def put(self, key: str, data: bytes) -> str:
        return self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        if self.down:
            raise self.exc
        return self.inner.get(key)


def test_pages_whose_classify_retries_ran_out_are_classified_later(
    tmp_path: Path, task_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The artifact store (S3) down while pages wait to be classified: the task's retries run
    out, the pages go FAILED (transient) and the document DONE; the reconciler sends them back
    to classify and the document ends DONE with every page classified once."""
    emb, sent = task_env
    monkeypatch.setattr(tasks.context, "classify_runtime", lambda: emb.runtime)
    full: list[list[int]] = []
    monkeypatch.setattr(tasks.full_depth, "apply_async",
                        lambda args, **_: full.append(list(args[0])))
    (path,) = write_corpus(tmp_path / "docs", [3])
    doc_id = _register(emb.ctx.sessions, path)
    assert tasks.ingest.apply(args=(doc_id,)).successful()
    (page_ids,) = sent["classify"]
    store = DownReads(emb.ctx.artifacts, EndpointConnectionError(endpoint_url=ENDPOINT))
    emb.ctx.artifacts = store
    assert tasks.classify.apply(args=(page_ids,)).failed()
    with session_scope(emb.ctx.sessions) as s:
        pages = s.query(Page).filter(Page.document_id == doc_id).all()
        assert {(p.state, p.failure_kind) for p in pages} == {("FAILED", "transient")}
        assert s.get(Document, doc_id).state == "DONE"  # every page final
        s.execute(update(Page).values(updated_at=utcnow() - timedelta(hours=1)))
    store.down = False
    sent["classify"].clear()
    result = tasks.reconcile.apply()
    assert result.successful(), result.traceback
    assert result.result["retried_pages"] == 3 and sent["classify"] == [page_ids]
    assert _doc(emb.ctx.sessions, doc_id).state == "INGESTED"
    assert tasks.classify.apply(args=(page_ids,)).successful()
    for ids in full:  # the re-routed ones, if any
        assert tasks.full_depth.apply(args=(ids,)).successful()
    with session_scope(emb.ctx.sessions) as s:
        pages = s.query(Page).filter(Page.document_id == doc_id).all()
        assert {p.state for p in pages} == {"DONE"}
        early = s.execute(select(Prediction.page_id).where(Prediction.pass_name == "early")
                          ).scalars().all()
    assert sorted(early) == sorted(page_ids)  # once each
    assert _doc(emb.ctx.sessions, doc_id).state == "DONE"


def test_a_permanent_failure_is_recorded_so_and_never_retried(tmp_path: Path, task_env) -> None:
    emb, sent = task_env
    (path,) = write_corpus(tmp_path / "docs", [1])
    doc_id = _register(emb.ctx.sessions, path)
    denied = ClientError({"Error": {"Code": "AccessDenied"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")
    emb.ctx.artifacts = DownArtifacts(emb.ctx.artifacts, denied)
    assert tasks.ingest.apply(args=(doc_id,)).failed()
    with session_scope(emb.ctx.sessions) as s:
        s.execute(update(Document).where(Document.id == doc_id)
                  .values(updated_at=utcnow() - timedelta(days=1)))
    assert tasks.reconcile.apply().result["retried"] == 0 and sent["ingest"] == []
    doc = _doc(emb.ctx.sessions, doc_id)
    assert (doc.state, doc.failure_kind) == ("FAILED", "permanent")


def test_a_bad_document_is_a_permanent_failure(tmp_path: Path, make_embedded) -> None:
    from workers import steps

    emb = make_embedded()
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.7\n truncated")
    doc_id = _register(emb.ctx.sessions, bad)
    assert steps.ingest_document(emb.ctx, doc_id).state == "FAILED"
    doc = _doc(emb.ctx.sessions, doc_id)
    assert (doc.failure_kind, doc.failed_attempts) == ("permanent", 1)


def _cli(home: Path, bundle: Path, *args: str,
         command: str = "retry") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCTRIAGE_")}
    env.update(DOCTRIAGE_HOME=str(home), DOCTRIAGE_MODEL_DIR=str(bundle),
               DOCTRIAGE_OCR_MODE="text", DOCTRIAGE_DPI="50", OMP_NUM_THREADS="1")
    return subprocess.run([DOCTRIAGE, command, *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=home)


def test_doctriage_retry_reruns_a_transient_failure_to_done(tmp_path: Path,
                                                          tiny_bundle: Path) -> None:
    """No broker configured: the embedded default. The transiently FAILED document is ingested
    and classified in the command's process; a permanent one is left alone unless asked."""
    home = tmp_path / "home"
    home.mkdir()
    docs = write_corpus(tmp_path / "docs", [3, 2])
    engine = make_engine(f"sqlite:///{home / 'doctriage.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    ids = [_register(sessions, p) for p in docs]
    with session_scope(sessions) as s:
        mark_document(s, ids[0], DocumentState.FAILED, failure_kind=FailureKind.TRANSIENT,
                      error="EndpointConnectionError: Could not connect to the endpoint URL")
        mark_document(s, ids[1], DocumentState.FAILED, failure_kind=FailureKind.PERMANENT,
                      error="doc-001-2p.pdf: truncated PDF")

    status = _cli(home, tiny_bundle, command="status")
    assert "failed_documents: 2 (transient 1, permanent 1)" in status.stdout, status.stdout
    dry = _cli(home, tiny_bundle, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would retry {ids[0]} " in dry.stdout and f" {ids[1]} " not in dry.stdout
    assert "1 FAILED documents match (dry run" in dry.stdout
    assert _doc(sessions, ids[0]).state == "FAILED"

    out = _cli(home, tiny_bundle)
    assert out.returncode == 0, out.stderr
    assert f"retry {ids[0]} " in out.stdout and "transient, 1 failed so far" in out.stdout
    assert f"document {ids[0]}: DONE" in out.stdout
    assert "retry: 1 of 1 documents re-run in this process: 1 DONE, 0 FAILED" in out.stdout
    doc = _doc(sessions, ids[0])
    assert (doc.state, doc.error, doc.failure_kind, doc.page_count) == ("DONE", None, None, 3)
    with session_scope(sessions) as s:
        early = s.execute(select(func.count()).select_from(Prediction).join(Page)
                          .where(Page.document_id == ids[0], Prediction.pass_name == "early")
                          ).scalar_one()
    assert early == 3
    assert _doc(sessions, ids[1]).state == "FAILED"  # permanent: not by default

    again = _cli(home, tiny_bundle, "--kind", "all", "--reason", "TRUNCATED")
    assert again.returncode == 0, again.stderr
    # The file is valid after all (say, the cause was fixed): an operator's re-run finishes it.
    assert f"document {ids[1]}: DONE" in again.stdout
    assert _doc(sessions, ids[1]).state == "DONE"
    engine.dispose()


@pytest.mark.parametrize("args", [["--kind", "sometimes"], ["--failed-since", "last week"]])
def test_doctriage_retry_bad_arguments_are_one_line_exit_2(tmp_path: Path, tiny_bundle: Path,
                                                           args: list[str]) -> None:
    out = _cli(tmp_path, tiny_bundle, *args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr
