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
from typing import Any, Generic, TypeVar
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


Entry = TypeVar("Entry")


class EventConsumer(Generic[Entry]):
    """The one polling loop both event feeds share: an entry is removed only after `handle`
    returned (i.e. after the document rows are committed), malformed or empty ones at once,
    and a failing one is left for redelivery until its feed gives up on it as poison.
    Subclasses say how entries are received, read, named, removed and retried."""

    log = log  # a subclass logs as its own module

    def receive(self) -> list[Entry]:
        raise NotImplementedError

    def parse(self, entry: Entry) -> ParsedMessage:
        raise NotImplementedError

    def describe(self, entry: Entry) -> str:
        raise NotImplementedError

    def remove(self, entry: Entry) -> None:
        raise NotImplementedError

    def handle_failed(self, entry: Entry, exc: Exception) -> bool:
        """After `handle` raised: True when the entry was dropped as poison, False when it is
        left for another try."""
        raise NotImplementedError

    def poll_once(self, handle: Callable[[list[S3Object]], None]) -> ConsumeStats:
        stats = ConsumeStats()
        for entry in self.receive():
            stats.received += 1
            try:
                parsed = self.parse(entry)
            except PoisonMessage as exc:
                self.log.error("%s is poison, dropping it: %s", self.describe(entry), exc)
                self.remove(entry)
                stats.poison += 1
                continue
            if not parsed.objects:
                self.log.info(
                    "%s: nothing to do (%s)", self.describe(entry), "; ".join(parsed.ignored)
                )
                self.remove(entry)
                stats.ignored += 1
                continue
            try:
                handle(parsed.objects)
            except Exception as exc:
                if self.handle_failed(entry, exc):
                    stats.poison += 1
                else:
                    stats.failed += 1
                continue
            # Only now: the rows are committed, so a crash before this line means a redelivery,
            # which registration absorbs as a no-op.
            self.remove(entry)
            stats.handled += 1
            stats.objects += len(parsed.objects)
        return stats


class SqsConsumer(EventConsumer[dict[str, Any]]):
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

    def parse(self, entry: dict[str, Any]) -> ParsedMessage:
        return parse_body(entry.get("Body", ""), self.location)

    def describe(self, entry: dict[str, Any]) -> str:
        return f"sqs message {entry.get('MessageId', '?')}"

    def remove(self, entry: dict[str, Any]) -> None:
        self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=entry["ReceiptHandle"])

    def handle_failed(self, entry: dict[str, Any], exc: Exception) -> bool:
        """SQS counts deliveries itself; a message left alone comes back after its visibility
        timeout."""
        receives = int(entry.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        if receives >= self.max_receives:
            log.error("%s failed %d times, deleting it as poison: %s",
                      self.describe(entry), receives, exc)
            self.remove(entry)
            return True
        log.warning("%s failed (delivery %d), left for retry: %s",
                    self.describe(entry), receives, exc)
        return False
