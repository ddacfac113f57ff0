"""MinIO's Redis notification target as the watcher's feed, on the real Redis: entries in the
exact shape MinIO writes (access format: RPUSH of `[{"Event": [record], "EventTime": ...}]`,
records spelled `minio:s3` / `s3:ObjectCreated:Put`), consumed at least once, never lost."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from pipelines.minio_events import RedisEventConsumer, parse_entry
from pipelines.s3 import S3Location, S3Object
from pipelines.sqs import PoisonMessage

pytestmark = pytest.mark.services
INBOX = S3Location("inbox", "scans/")


def minio_entry(key: str, name: str = "s3:ObjectCreated:Put", bucket: str = "inbox") -> str:
    record = {
        "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
        "eventTime": "2026-11-29T02:00:00.123Z", "eventName": name,
        "userIdentity": {"principalId": "minioadmin"}, "requestParameters": {},
        "responseElements": {},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "minioadmin"},
                          "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": key, "size": 1234, "eTag": "0123abcd", "sequencer": "1"}},
        "source": {"host": "172.18.0.1", "port": "", "userAgent": "MinIO"},
    }
    return json.dumps([{"Event": [record], "EventTime": record["eventTime"]}])


@pytest.fixture
def client(redis_url: str) -> Iterator[object]:
    import redis

    c = redis.Redis.from_url(redis_url)
    yield c
    for key in c.keys("test-events*"):
        c.delete(key)


def test_entries_become_objects_in_order_and_are_removed_once_handled(client) -> None:
    client.rpush("test-events", minio_entry("scans/a+b.pdf"), minio_entry("scans/c.png"))
    seen: list[S3Object] = []
    consumer = RedisEventConsumer(client, "test-events", INBOX, consumer="t1", wait_s=1)
    stats = consumer.poll_once(seen.extend)
    assert (stats.received, stats.handled, stats.objects) == (2, 2, 2)
    assert [(o.bucket, o.key, o.etag, o.size) for o in seen] == [
        ("inbox", "scans/a b.pdf", "0123abcd", 1234), ("inbox", "scans/c.png", "0123abcd", 1234)]
    assert client.llen("test-events") == 0 and client.llen(consumer.processing) == 0
    assert consumer.poll_once(seen.extend).received == 0  # empty: waits wait_s, takes nothing


def test_a_failing_handle_puts_the_event_back_then_drops_it_as_poison(client) -> None:
    client.rpush("test-events", minio_entry("scans/x.pdf"))
    consumer = RedisEventConsumer(client, "test-events", INBOX, consumer="t2", wait_s=1,
                                  max_attempts=3)

    def broken(_objects: list[S3Object]) -> None:
        raise ConnectionError("database down")

    assert consumer.poll_once(broken).failed == 1
    assert client.llen("test-events") == 1  # back on the list, not lost
    assert consumer.poll_once(broken).failed == 1
    assert consumer.poll_once(broken).poison == 1
    assert client.llen("test-events") == 0 and client.llen(consumer.processing) == 0
    # A later, healthy delivery of the same event starts with a clean attempt count.
    client.rpush("test-events", minio_entry("scans/x.pdf"))
    assert consumer.poll_once(lambda _o: None).handled == 1
    assert client.hlen(consumer.attempts_key) == 0


def test_a_consumer_that_died_mid_event_leaves_it_for_the_next_one(client) -> None:
    client.rpush("test-events", minio_entry("scans/one.pdf"))
    first = RedisEventConsumer(client, "test-events", INBOX, consumer="node-a", wait_s=1)
    assert len(first.receive()) == 1  # taken, then the process dies before handling it
    assert client.llen("test-events") == 0 and client.llen(first.processing) == 1
    again = RedisEventConsumer(client, "test-events", INBOX, consumer="node-a", wait_s=1)
    assert again.recover() == 1
    seen: list[S3Object] = []
    assert again.poll_once(seen.extend).handled == 1
    assert [o.key for o in seen] == ["scans/one.pdf"]


def test_deletions_other_prefixes_and_garbage_are_dropped_without_handling(client) -> None:
    client.rpush("test-events", minio_entry("scans/gone.pdf", "s3:ObjectRemoved:Delete"),
                 minio_entry("other/a.pdf"), "not json", json.dumps({"hello": 1}))
    consumer = RedisEventConsumer(client, "test-events", INBOX, consumer="t3", wait_s=1)
    stats = consumer.poll_once(lambda _o: pytest.fail("nothing here should be handled"))
    assert (stats.received, stats.ignored, stats.poison) == (4, 2, 2)
    assert client.llen("test-events") == 0 and client.llen(consumer.processing) == 0


def test_parse_entry_reads_the_s3_shape_too() -> None:
    aws = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {"name": "inbox"},
                               "object": {"key": "scans/z.pdf", "size": 1, "eTag": "e"}}}]}
    assert [o.key for o in parse_entry(json.dumps(aws), INBOX).objects] == ["scans/z.pdf"]
    with pytest.raises(PoisonMessage):
        parse_entry("[1, 2]", INBOX)
