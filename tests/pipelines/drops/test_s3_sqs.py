"""S3 event notifications through SQS (moto's real server): each upload registered once, a
duplicate event creates nothing, test events and malformed bodies are deleted and logged, and a
message is deleted only after its rows are committed."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from drops_helpers import make_pdf
from sqlalchemy import func, select

from db.models import Document
from db.session import session_scope
from pipelines.s3 import S3Location, S3Object, S3Options, S3Source, object_uri
from pipelines.sqs import PoisonMessage, SqsConsumer, parse_body
from workers.intake.registration import register_documents


def _register(store: Any, source: S3Source, objects: Any) -> Any:
    """The watch path: listed objects -> references -> the one registration path."""
    return register_documents(store, source.refs(objects), screen=source.screen)


def _event(bucket: str, key: str, etag: str = "abc", size: int = 10,
           name: str = "ObjectCreated:Put") -> dict[str, Any]:
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-29T01:02:03.000Z", "eventName": name,
        "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": key, "size": size, "eTag": etag, "sequencer": "01"}},
    }]}


def test_parse_body_decodes_keys_and_rejects_garbage() -> None:
    loc = S3Location("b", "in/")
    parsed = parse_body(json.dumps(_event("b", "in/my+file%2C+v2.pdf", etag="e1")), loc)
    (obj,) = parsed.objects
    assert obj.key == "in/my file, v2.pdf" and obj.etag == "e1" and obj.size == 10
    assert parse_body(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})).ignored
    assert parse_body(json.dumps(_event("b", "in/x.pdf", name="ObjectRemoved:Delete"))).ignored
    assert parse_body(json.dumps(_event("b", "other/x.pdf")), loc).ignored
    sns = {"Type": "Notification", "Message": json.dumps(_event("b", "in/y.pdf"))}
    assert parse_body(json.dumps(sns), loc).objects[0].key == "in/y.pdf"
    for bad in ("not json", "[1, 2]", json.dumps({"hello": 1}),
                json.dumps({"Records": [{"eventSource": "aws:s3",
                                         "eventName": "ObjectCreated:Put", "s3": {}}]})):
        with pytest.raises(PoisonMessage):
            parse_body(bad)


def _count(store: Any) -> int:
    with session_scope(store) as s:
        return int(s.execute(select(func.count()).select_from(Document)).scalar_one())


def _queue(sqs: Any) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=f"drops-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, arn["Attributes"]["QueueArn"]


def _drain(consumer: SqsConsumer, handle: Any, rounds: int = 3) -> list[Any]:
    return [consumer.poll_once(handle) for _ in range(rounds)]


def _left(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                      "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"])


def test_bucket_notifications_register_each_upload_once(
    s3: Any, sqs: Any, bucket: str, s3_options: S3Options, store: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, arn = _queue(sqs)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    keys = ["in/one.pdf", "in/two words.pdf"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=make_pdf(key))
    source = S3Source(f"s3://{bucket}/in/", s3, s3_options)
    consumer = SqsConsumer(sqs, url, source.location, wait_s=1)
    new: list[int] = []

    def handle(objects: list[S3Object]) -> None:
        new.extend(_register(store, source, objects).new_ids)

    with caplog.at_level(logging.INFO, logger="pipelines.sqs"):
        stats = _drain(consumer, handle)
    assert sum(st.handled for st in stats) == 2
    assert len(new) == 2 and _count(store) == 2
    with session_scope(store) as s:
        uris = set(s.execute(select(Document.source_uri)).scalars())
    assert uris == {object_uri(bucket, k) for k in keys}
    assert _left(sqs, url) == 0

    # S3 delivers at least once: the same event again creates nothing and is deleted.
    (obj,) = [o for o in source.list_objects() if o.key == "in/one.pdf"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(_event(bucket, "in/one.pdf", obj.etag)))
    new.clear()
    stats = _drain(consumer, handle, 1)
    assert stats[0].handled == 1 and new == [] and _count(store) == 2
    assert _left(sqs, url) == 0


def test_poison_and_failures(sqs: Any, bucket: str, s3: Any, s3_options: S3Options, store: Any,
                             caplog: pytest.LogCaptureFixture) -> None:
    url, _ = _queue(sqs)
    source = S3Source(f"s3://{bucket}/", s3, s3_options)
    consumer = SqsConsumer(sqs, url, source.location, wait_s=1, max_receives=2,
                           visibility_timeout_s=0)
    sqs.send_message(QueueUrl=url, MessageBody="{this is not json")
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": bucket}))
    with caplog.at_level(logging.INFO, logger="pipelines.sqs"):
        stats = _drain(consumer, lambda objs: None, 2)
    assert sum(st.poison for st in stats) == 1 and sum(st.ignored for st in stats) == 1
    assert "poison" in caplog.text and "s3:TestEvent" in caplog.text
    assert _left(sqs, url) == 0

    # The handler fails (say the database is down): the message stays until max_receives.
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(_event(bucket, "x.pdf")))

    def broken(objects: list[S3Object]) -> None:
        raise RuntimeError("database unavailable")

    first = consumer.poll_once(broken)
    assert first.failed == 1 and _left(sqs, url) == 1
    second = consumer.poll_once(broken)  # second delivery reaches max_receives=2
    assert second.poison == 1 and _left(sqs, url) == 0
    assert _count(store) == 0
