"""S3 event notifications, delivered to an SQS queue, as a feed of new objects.

S3 delivers each event at least once, so the consumer's contract is: a message is deleted only
after ``handle`` returned, i.e. after the document rows it names are committed; if ``handle``
raises, the message becomes visible again and is retried. What can never succeed - bodies that
are not S3 events, ``s3:TestEvent``, events for other buckets/prefixes or for deletions - is
logged and deleted at once, and a message that keeps failing is dropped as poison after
``max_receives`` deliveries, so nothing is retried forever.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from pipelines.s3 import S3Location, S3Object

log = logging.getLogger(__name__)


class PoisonMessage(ValueError):
    """A message body that no retry can turn into S3 events."""


@dataclass(frozen=True)
class ParsedMessage:
    objects: list[S3Object]
    ignored: list[str] = field(default_factory=list)  # why records (or the message) were ignored


def _unwrap(body: Any) -> Any:
    # S3 -> SNS -> SQS wraps the event in an SNS envelope whose "Message" is the JSON string.
    if isinstance(body, dict) and body.get("Type") == "Notification" and "Message" in body:
        try:
            return json.loads(body["Message"])
        except (TypeError, ValueError) as exc:
            raise PoisonMessage(f"SNS envelope with a non-JSON Message: {exc}") from None
    return body


def parse_body(body: str, location: S3Location | None = None) -> ParsedMessage:
    """The created objects an event message names. Raises PoisonMessage for anything else."""
    try:
        doc = _unwrap(json.loads(body))
    except ValueError as exc:
        raise PoisonMessage(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PoisonMessage("body is not a JSON object")
    if doc.get("Event") == "s3:TestEvent":
        return ParsedMessage([], ["s3:TestEvent"])
    records = doc.get("Records")
    if not isinstance(records, list):
        raise PoisonMessage("no Records list: not an S3 event notification")
    objects: list[S3Object] = []
    ignored: list[str] = []
    for i, rec in enumerate(records):
        try:
            obj, why = _parse_record(rec, location)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PoisonMessage(f"record {i} is malformed: {type(exc).__name__}: {exc}") from None
        if obj is None:
            ignored.append(why)
        else:
            objects.append(obj)
    return ParsedMessage(objects, ignored)


def _parse_record(rec: dict[str, Any], location: S3Location | None) -> tuple[S3Object | None, str]:
    source = rec.get("eventSource")
    name = rec.get("eventName", "")
    if source != "aws:s3":
        return None, f"not an S3 record (eventSource {source!r})"
    if not name.startswith("ObjectCreated:"):
        return None, f"event {name!r} creates nothing"
    s3 = rec["s3"]
    bucket = s3["bucket"]["name"]
    obj = s3["object"]
    # Keys in event notifications are URL-encoded form style: '+' is a space.
    key = unquote_plus(obj["key"])
    if location and (bucket != location.bucket or not key.startswith(location.prefix)):
        return None, f"s3://{bucket}/{key} is outside {location.uri}"
    when = rec.get("eventTime")
    return S3Object(
        bucket=bucket,
        key=key,
        etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
        size=int(obj["size"]) if obj.get("size") is not None else None,
        last_modified=datetime.fromisoformat(when.replace("Z", "+00:00")) if when else None,
        version_id=obj.get("versionId") or None,
    ), ""


@dataclass
class ConsumeStats:
    received: int = 0
    handled: int = 0  # messages whose objects were handed over and committed, then deleted
    ignored: int = 0  # deleted: nothing to do (test events, deletions, other prefixes)
    poison: int = 0  # deleted: malformed, or failed max_receives times
    failed: int = 0  # left on the queue for redelivery
    objects: int = 0


class SqsConsumer:
    """Long-polls one queue. ``handle(objects)`` must commit before it returns."""

    def __init__(self, client: Any, queue_url: str, location: S3Location | None = None, *,
                 wait_s: int = 20, max_messages: int = 10, max_receives: int = 5,
                 visibility_timeout_s: int | None = None):
        self.client = client
        self.queue_url = queue_url
        self.location = location
        self.wait_s = wait_s
        self.max_messages = max_messages
        self.max_receives = max_receives
        self.visibility_timeout_s = visibility_timeout_s

    def receive(self) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": self.max_messages,
            "WaitTimeSeconds": self.wait_s,  # long polling: an idle queue costs one call per wait
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        }
        if self.visibility_timeout_s is not None:
            params["VisibilityTimeout"] = self.visibility_timeout_s
        return self.client.receive_message(**params).get("Messages", [])

    def _delete(self, msg: dict[str, Any]) -> None:
        self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=msg["ReceiptHandle"])

    def poll_once(self, handle: Callable[[list[S3Object]], None]) -> ConsumeStats:
        stats = ConsumeStats()
        for msg in self.receive():
            stats.received += 1
            mid = msg.get("MessageId", "?")
            try:
                parsed = parse_body(msg.get("Body", ""), self.location)
            except PoisonMessage as exc:
                log.error("sqs message %s is poison, deleting it: %s", mid, exc)
                self._delete(msg)
                stats.poison += 1
                continue
            if not parsed.objects:
                log.info("sqs message %s: nothing to do (%s)", mid, "; ".join(parsed.ignored))
                self._delete(msg)
                stats.ignored += 1
                continue
            try:
                handle(parsed.objects)
            except Exception as exc:
                receives = int(msg.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
                if receives >= self.max_receives:
                    log.error("sqs message %s failed %d times, deleting it as poison: %s",
                              mid, receives, exc)
                    self._delete(msg)
                    stats.poison += 1
                else:
                    log.warning("sqs message %s failed (delivery %d), left for retry: %s",
                                mid, receives, exc)
                    stats.failed += 1
                continue
            # Only now: the rows are committed, so a crash before this line means a redelivery,
            # which registration absorbs as a no-op.
            self._delete(msg)
            stats.handled += 1
            stats.objects += len(parsed.objects)
        return stats
