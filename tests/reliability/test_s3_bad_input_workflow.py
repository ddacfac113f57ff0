"""Bad input arriving through S3 and SQS (moto's real server on loopback; boto3 talks HTTP to
it), carried through to rows and states by the real steps: hostile or odd keys, a zero-byte and
a non-document object, an object deleted between listing and ingestion, malformed and duplicate
SQS events. Each ends with one clear reason on its row; every good document is classified once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import pytest
from relkit import record_result, text_pdf_bytes
from servicekit import moto_server
from sqlalchemy import select

from db.models import Document, Page, Prediction
from db.session import session_scope
from pipelines.s3 import S3Options, S3Source, make_client, object_uri, register_s3_opener
from pipelines.sqs import SqsConsumer
from workers.embedded import run_documents
from workers.intake.registration import register_documents

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _register(store: Any, source: S3Source, objects: Any) -> Any:
    """The watch path: listed objects -> references -> the one registration path."""
    return register_documents(store, source.refs(objects), screen=source.screen)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Options:
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    options = S3Options(endpoint_url=moto_endpoint, region="us-east-1")
    register_s3_opener(options)  # the ingest step opens s3:// URIs
    return options


def _run(emb: Any, ids: list[int]) -> Any:
    return run_documents(emb.ctx, emb.runtime, sorted(ids))


def _docs(emb: Any) -> dict[str, tuple[str, str | None, int]]:
    with session_scope(emb.ctx.sessions) as s:
        return {d.source_uri: (d.state, d.error, d.id)
                for d in s.execute(select(Document)).scalars()}


def _early_per_page(emb: Any) -> tuple[int, int]:
    with session_scope(emb.ctx.sessions) as s:
        pages = s.execute(select(Page.id)).scalars().all()
        early = s.execute(select(Prediction.page_id).where(Prediction.pass_name == "early")).all()
    return len(pages), len(early)


def test_hostile_keys_and_a_vanished_object(aws: S3Options, make_embedded) -> None:
    s3 = make_client(aws)
    bucket = f"rel-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    pdf = text_pdf_bytes(2, "s3")
    objects = {
        "in/good-0.pdf": pdf, "in/good-1.pdf": text_pdf_bytes(3, "s3b"),
        "in/ünï cødé, 100% #1?+&.pdf": text_pdf_bytes(1, "odd"),  # odd but legitimate
        "in/../../etc/passwd.pdf": pdf,
        "in/./dot.pdf": pdf,
        "in/ctrl\x07bell.pdf": pdf,
        "in/empty.pdf": b"",
        "in/notes": b"just some notes, not a document",
        "in/vanishes.pdf": text_pdf_bytes(2, "gone"),
    }
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    source = S3Source(f"s3://{bucket}/in/", s3, aws)
    listed = list(source.list_objects())
    assert {o.key for o in listed} == set(objects)  # the server kept every key verbatim
    emb = make_embedded()
    result = _register(emb.ctx.sessions, source, listed)
    again = _register(emb.ctx.sessions, source, listed)  # a second listing: no-op
    assert again.new_ids == [] and again.known == len(objects)
    s3.delete_object(Bucket=bucket, Key="in/vanishes.pdf")  # between the event and ingestion
    summary = _run(emb, result.new_ids)
    docs = _docs(emb)

    def row(key: str) -> tuple[str, str | None, int]:
        return docs[object_uri(bucket, key)]

    expect_skipped = {
        "in/../../etc/passwd.pdf": "rejected key: '.' or '..' path segment",
        "in/./dot.pdf": "rejected key: '.' or '..' path segment",
        "in/ctrl\x07bell.pdf": "rejected key: contains control",
        "in/empty.pdf": "zero bytes",
        "in/notes": "unknown type",
    }
    for key, reason in expect_skipped.items():
        state, error, _ = row(key)
        assert state == "SKIPPED" and error is not None and error.startswith(reason), (key, error)
        assert "\n" not in error
    state, error, _ = row("in/vanishes.pdf")
    assert state == "FAILED" and "deleted since listed" in error and "\n" not in error
    for key in ("in/good-0.pdf", "in/good-1.pdf", "in/ünï cødé, 100% #1?+&.pdf"):
        assert row(key)[:2] == ("DONE", None), key
    assert "\x07" not in "".join(docs)  # no control byte in any stored uri
    pages, early = _early_per_page(emb)
    assert pages == early == 2 + 3 + 1
    assert summary.documents_by_state == {"DONE": 3, "FAILED": 1}
    record_result({"fault": "S3 object deleted between listing and ingestion (embedded)",
                   "kind": "bad_input", "pages_in": 6, "pages_out": early, "duplicates": 0,
                   "recover_s": None, "outcome": error})
    for key in expect_skipped:
        record_result({"fault": f"S3 key {key!r}", "kind": "bad_input", "pages_in": 0,
                       "pages_out": 0, "duplicates": 0, "recover_s": None,
                       "outcome": f"SKIPPED: {row(key)[1]}"})


def _event(bucket: str, key: str, etag: str) -> str:
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-29T01:02:03.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key), "size": 10,
                                                     "eTag": etag, "sequencer": "01"}},
    }]})


def test_malformed_and_duplicate_sqs_events(aws: S3Options, make_embedded) -> None:
    s3, sqs = make_client(aws), make_client(aws, "sqs")
    bucket = f"rel-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    url = sqs.create_queue(QueueName=f"rel-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    etags = {}
    for key, n in (("in/a.pdf", 2), ("in/b c.pdf", 1)):
        etags[key] = s3.put_object(Bucket=bucket, Key=key,
                                   Body=text_pdf_bytes(n, key))["ETag"].strip('"')
    bodies = [
        "not json at all {",
        json.dumps([1, 2, 3]),
        json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                 "s3": {}}]}),
        json.dumps({"Records": "nope"}),
        "\x00\x01binary-ish",
        _event(bucket, "in/a.pdf", etags["in/a.pdf"]),
        _event(bucket, "in/a.pdf", etags["in/a.pdf"]),  # S3 delivers at least once
        _event(bucket, "in/b c.pdf", etags["in/b c.pdf"]),
        _event(bucket, "in/../escape.pdf", "0" * 32),
    ]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    emb = make_embedded()
    source = S3Source(f"s3://{bucket}/in/", s3, aws)
    consumer = SqsConsumer(sqs, url, source.location, wait_s=1)
    new: list[int] = []
    stats = []
    for _ in range(4):
        stats.append(consumer.poll_once(
            lambda objs: new.extend(_register(emb.ctx.sessions, source, objs).new_ids)))
    poison = sum(st.poison for st in stats)
    handled = sum(st.handled for st in stats)
    assert poison >= 4 and handled == 4 and sum(st.failed for st in stats) == 0
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert int(attrs["ApproximateNumberOfMessages"]) == 0  # nothing left to loop on
    summary = _run(emb, new)
    docs = _docs(emb)
    assert docs[object_uri(bucket, "in/a.pdf")][0] == "DONE"
    assert docs[object_uri(bucket, "in/b c.pdf")][0] == "DONE"
    state, error, _ = docs[object_uri(bucket, "in/../escape.pdf")]
    assert state == "SKIPPED" and error.startswith("rejected key")
    assert len(docs) == 3 and summary.documents_by_state == {"DONE": 2}
    pages, early = _early_per_page(emb)
    assert pages == early == 3
    record_result({"fault": "malformed / duplicate SQS events", "kind": "bad_input",
                   "pages_in": 3, "pages_out": early, "duplicates": 0, "recover_s": None,
                   "outcome": f"{poison} poison messages deleted, {handled} handled, "
                              f"duplicate event registered nothing"})
