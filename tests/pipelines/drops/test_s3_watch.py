"""End to end: small PDFs uploaded to moto's S3, `doctriage watch --once` in embedded mode with a
tiny model built here -> documents registered once, ingested, classified; then the same through
SQS notifications, where a duplicate event creates nothing new; then `doctriage backlog`."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from drops_helpers import make_pdf
from modelkit import build_tiny_bundle
from sqlalchemy import func, select
from typer.testing import CliRunner

from db.models import Document, Page, Prediction
from db.session import make_engine, session_factory, session_scope
from db.states import DocumentState

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The workflow tests' tiny bundle (random weights, built locally, nothing fetched).
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture
def cli(aws_env: str, tiny_model_dir: Path, isolated_home: Path,
        monkeypatch: pytest.MonkeyPatch) -> Any:
    from doctriage.settings import get_settings

    monkeypatch.setenv("DOCTRIAGE_MODEL_DIR", str(tiny_model_dir))
    monkeypatch.delenv("DOCTRIAGE_BROKER_URL", raising=False)
    monkeypatch.delenv("DOCTRIAGE_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    from doctriage.cli import app

    runner = CliRunner()

    def invoke(*args: str) -> Any:
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    return invoke


def _store(home: Path) -> Any:
    return session_factory(make_engine(f"sqlite:///{home / 'doctriage.db'}"))


def _docs(home: Path) -> dict[str, tuple[str, str | None]]:
    with session_scope(_store(home)) as s:
        return {u: (st, e) for u, st, e in s.execute(
            select(Document.source_uri, Document.state, Document.error))}


def _predictions(home: Path) -> int:
    with session_scope(_store(home)) as s:
        return int(s.execute(select(func.count()).select_from(Prediction)).scalar_one())


def test_watch_once_polls_ingests_and_classifies(cli: Any, s3: Any, bucket: str,
                                                 isolated_home: Path) -> None:
    s3.put_object(Bucket=bucket, Key="in/2026/a.pdf", Body=make_pdf("alpha", pages=2))
    s3.put_object(Bucket=bucket, Key="in/2026/b c.pdf", Body=make_pdf("beta"))
    s3.put_object(Bucket=bucket, Key="in/2026/", Body=b"")
    s3.put_object(Bucket=bucket, Key="in/readme.txt", Body=b"not a document")

    out = cli("watch", f"s3://{bucket}/in/", "--once").output
    assert "2 new, 2 skipped" in out
    docs = _docs(isolated_home)
    states = sorted(st for st, _ in docs.values())
    assert states == ["DONE", "DONE", "SKIPPED", "SKIPPED"]
    with session_scope(_store(isolated_home)) as s:
        assert s.execute(select(func.count()).select_from(Page)).scalar_one() == 3
    assert _predictions(isolated_home) >= 3  # an early answer per page (+ full-depth re-routes)

    # A second poll right after: one cheap tail listing, nothing registered, nothing run.
    out = cli("watch", f"s3://{bucket}/in/", "--once").output
    assert "tail listed 0 (1 requests), 0 new" in out
    assert len(_docs(isolated_home)) == 4

    # A new key sorting after the newest one is found by the next (tail) poll; one sorting
    # before it ("in/2026/..." < "in/readme.txt") only by a sweep.
    s3.put_object(Bucket=bucket, Key="in/zz.pdf", Body=make_pdf("omega"))
    s3.put_object(Bucket=bucket, Key="in/2026/z.pdf", Body=make_pdf("zeta"))
    assert "tail listed 1 (1 requests), 1 new" in cli(
        "watch", f"s3://{bucket}/in/", "--once").output
    out = cli("watch", f"s3://{bucket}/in/", "--once", "--sweep-every", "0").output
    assert "sweep listed 6" in out and ", 1 new" in out
    assert sorted(st for st, _ in _docs(isolated_home).values()).count("DONE") == 4

    # The nightly backlog right after finds nothing left to do under the prefix.
    report = json.loads(cli("backlog", f"s3://{bucket}/in/", "--json").stdout)
    assert report["registered"] == 0 and report["messages"] == 0


def test_watch_sqs_once_and_duplicate_event(cli: Any, s3: Any, sqs: Any, bucket: str,
                                            isolated_home: Path) -> None:
    url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    s3.put_object(Bucket=bucket, Key="drop/one.pdf", Body=make_pdf("one"))
    s3.put_object(Bucket=bucket, Key="drop/empty.pdf", Body=b"")

    out = cli("watch", f"s3://{bucket}/drop/", "--sqs", url, "--once").output
    assert "1 new, 1 skipped" in out
    docs = _docs(isolated_home)
    assert sorted(st for st, _ in docs.values()) == [DocumentState.DONE, DocumentState.SKIPPED]
    before = _predictions(isolated_home)

    # The same event again (S3 delivers at least once) plus a malformed message.
    etag = s3.head_object(Bucket=bucket, Key="drop/one.pdf")["ETag"].strip('"')
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"Records": [{
        "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": "drop/one.pdf", "size": 9,
                                                      "eTag": etag}}}]}))
    sqs.send_message(QueueUrl=url, MessageBody="garbage")
    out = cli("watch", f"s3://{bucket}/drop/", "--sqs", url, "--once").output
    assert "2 messages, 0 new" in out
    assert len(_docs(isolated_home)) == 2 and _predictions(isolated_home) == before
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_run_accepts_an_s3_prefix_and_records_non_documents(
    cli: Any, s3: Any, bucket: str, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run s3://` lists the prefix once, sniffs each unknown key once, and records what is not
    a document SKIPPED with the reason, as `watch` does."""
    from pipelines.s3 import S3Source, object_uri

    s3.put_object(Bucket=bucket, Key="batch/x.pdf", Body=make_pdf("x"))
    s3.put_object(Bucket=bucket, Key="batch/notes.txt", Body=b"text")
    s3.put_object(Bucket=bucket, Key="batch/sub/", Body=b"")
    calls = {"list": 0, "sniff": 0}
    real_list, real_head = S3Source.list_objects, S3Source.head_bytes

    def counted_list(self: S3Source, *args: Any, **kwargs: Any) -> Any:
        calls["list"] += 1
        return real_list(self, *args, **kwargs)

    def counted_head(self: S3Source, *args: Any, **kwargs: Any) -> bytes:
        calls["sniff"] += 1
        return real_head(self, *args, **kwargs)

    monkeypatch.setattr(S3Source, "list_objects", counted_list)
    monkeypatch.setattr(S3Source, "head_bytes", counted_head)
    summary = json.loads(cli("run", f"s3://{bucket}/batch/", "--json").stdout)
    assert calls == {"list": 1, "sniff": 1}  # one listing; notes.txt sniffed once
    assert summary["pages"] == 1 and summary["documents"] == 3
    assert summary["documents_by_state"] == {"DONE": 1, "SKIPPED": 2}
    docs = _docs(isolated_home)
    assert docs[object_uri(bucket, "batch/x.pdf")] == (DocumentState.DONE, None)
    state, reason = docs[object_uri(bucket, "batch/notes.txt")]
    assert state == DocumentState.SKIPPED and reason is not None
    assert reason.startswith("unknown type: suffix .txt")
    assert docs[object_uri(bucket, "batch/sub/")] == (DocumentState.SKIPPED, "folder marker")
    skipped = {d["name"]: d["error"] for d in summary["per_document"] if d["state"] == "SKIPPED"}
    assert len(skipped) == 2 and reason in skipped.values()
    # Registered on the same (uri, etag) key `watch` uses: a later watch finds all three known.
    out = cli("watch", f"s3://{bucket}/batch/", "--once").output
    assert "0 new, 0 skipped, 3 known" in out
    # And the same run again sniffs nothing: what is known is not looked at again.
    calls.update(list=0, sniff=0)
    again = json.loads(cli("run", f"s3://{bucket}/batch/", "--json").stdout)
    assert calls == {"list": 1, "sniff": 0}
    assert again["documents_by_state"] == {"DONE": 1, "SKIPPED": 2}


def test_bad_targets_fail_with_one_line(cli: Any, bucket: str) -> None:
    from doctriage.cli import app

    runner = CliRunner()
    for args in (["run", "s3://no-such-bucket-here/x/"], ["watch", "s3:/bad"],
                 ["watch", "s3://no-such-bucket-here/", "--once"],
                 ["backlog", "s3://no-such-bucket-here/"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.output


def test_object_replaced_after_registration_is_not_read_under_the_old_row(
    s3: Any, bucket: str, s3_options: Any, tmp_path: Path
) -> None:
    """The ingest step opens the object at the etag the document was registered with: bytes
    uploaded later under the same key belong to a new document row, never to the old one."""
    from db.repository import register_document
    from db.session import migrate
    from pipelines.artifacts import LocalArtifactStore
    from pipelines.s3 import ObjectChanged, register_s3_opener
    from workers.steps import StepContext, ingest_document

    old = s3.put_object(Bucket=bucket, Key="in/r.pdf", Body=make_pdf("first"))
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    with session_scope(sessions) as s:
        doc_id, _ = register_document(s, f"s3://{bucket}/in/r.pdf", etag=old["ETag"].strip('"'))
    s3.put_object(Bucket=bucket, Key="in/r.pdf", Body=make_pdf("second", pages=2))

    register_s3_opener(s3_options)
    ctx = StepContext(sessions=sessions, artifacts=LocalArtifactStore(tmp_path / "artifacts"))
    # A permanent error: the task's on_failure (or the embedded runner) marks the row FAILED.
    with pytest.raises(ObjectChanged, match="replaced or deleted"):
        ingest_document(ctx, doc_id)
    with session_scope(sessions) as s:
        assert s.execute(select(func.count()).select_from(Page)).scalar_one() == 0
