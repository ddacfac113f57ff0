"""MinIO bucket notifications, delivered to a Redis list, as a feed of new objects.

MinIO cannot publish to SQS, but it can publish to Redis, which the distributed setup already
runs. With the Redis target in `access` format MinIO RPUSHes, per event, the JSON
`[{"Event": [<S3-style record>], "EventTime": "..."}]` onto a list; when Redis is down it keeps
the events in its queue folder and replays them, so none is lost. The records differ from AWS's
in two spellings (eventSource `minio:s3`, eventName `s3:ObjectCreated:Put`); once normalised,
`pipelines.sqs.parse_body` reads them like an SQS message.

The consumer keeps the SQS consumer's contract (`poll_once(handle) -> ConsumeStats`, an entry
is removed only after `handle` returned, i.e. after the document rows are committed) with the
reliable-queue pattern: LMOVE moves an entry atomically into this consumer's processing list,
and only a finished entry is removed from there. Entries left in the processing list by a
consumer that died are moved back when a consumer of the same name starts (`recover`).
A failing entry goes back to the tail of the list and is dropped as poison after
`max_attempts`; unparseable ones are dropped at once. Nothing is retried forever.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from typing import Any

from pipelines.s3 import S3Location
from pipelines.sqs import EventConsumer, ParsedMessage, PoisonMessage, parse_body

log = logging.getLogger(__name__)

DEFAULT_KEY = "doctriage:minio-events"


def _normalise(record: Any) -> Any:
    """A MinIO event record spelled the way AWS spells it."""
    if not isinstance(record, dict):
        return record
    out = dict(record)
    if out.get("eventSource") == "minio:s3":
        out["eventSource"] = "aws:s3"
    name = out.get("eventName")
    if isinstance(name, str) and name.startswith("s3:"):
        out["eventName"] = name[3:]
    return out


def parse_entry(entry: str | bytes, location: S3Location | None = None) -> ParsedMessage:
    """The created objects one list entry names. Raises PoisonMessage for anything else."""
    try:
        doc = json.loads(entry)
    except ValueError as exc:
        raise PoisonMessage(f"entry is not JSON: {exc}") from None
    if isinstance(doc, dict):  # a single access-format object, or an S3-style {"Records": ...}
        doc = [doc]
    if not isinstance(doc, list):
        raise PoisonMessage("entry is not a JSON list of events")
    records: list[Any] = []
    for item in doc:
        if not isinstance(item, dict):
            raise PoisonMessage("entry holds something other than event objects")
        found = item.get("Event", item.get("Records"))
        if not isinstance(found, list):
            raise PoisonMessage("no Event/Records list: not a MinIO event notification")
        records.extend(_normalise(r) for r in found)
    return parse_body(json.dumps({"Records": records}), location)


class RedisEventConsumer(EventConsumer[bytes]):
    """Takes MinIO's events from the Redis list `key`. ``handle(objects)`` must commit first."""

    log = log

    def __init__(self, client: Any, key: str = DEFAULT_KEY, location: S3Location | None = None,
                 *, consumer: str | None = None, wait_s: float = 5.0, max_messages: int = 10,
                 max_attempts: int = 5) -> None:
        self.client = client
        self.key = key
        self.location = location
        self.processing = f"{key}:processing:{consumer or socket.gethostname()}"
        self.attempts_key = f"{key}:attempts"
        self.wait_s = wait_s
        self.max_messages = max_messages
        self.max_attempts = max_attempts

    @classmethod
    def from_url(cls, url: str, key: str = DEFAULT_KEY, location: S3Location | None = None,
                 **kwargs: Any) -> RedisEventConsumer:
        import redis

        return cls(redis.Redis.from_url(url), key, location, **kwargs)

    def recover(self) -> int:
        """Move entries a dead consumer of this name left in processing back to the list's
        head (they are the oldest). Returns how many."""
        moved = 0
        while self.client.lmove(self.processing, self.key, "RIGHT", "LEFT") is not None:
            moved += 1
        if moved:
            log.warning("%s: %d unfinished event(s) from a previous run put back", self.key, moved)
        return moved

    def receive(self) -> list[bytes]:
        first = self.client.blmove(self.key, self.processing, self.wait_s, "LEFT", "RIGHT")
        if first is None:
            return []
        got = [first]
        while len(got) < self.max_messages:
            more = self.client.lmove(self.key, self.processing, "LEFT", "RIGHT")
            if more is None:
                break
            got.append(more)
        return got

    def parse(self, entry: bytes) -> ParsedMessage:
        return parse_entry(entry, self.location)

    def describe(self, entry: bytes) -> str:
        return f"{self.key}: event entry"

    def remove(self, entry: bytes) -> None:
        pipe = self.client.pipeline()
        pipe.lrem(self.processing, 1, entry)
        pipe.hdel(self.attempts_key, _digest(entry))
        pipe.execute()

    def handle_failed(self, entry: bytes, exc: Exception) -> bool:
        attempts = int(self.client.hget(self.attempts_key, _digest(entry)) or 0) + 1
        if attempts >= self.max_attempts:
            log.error("%s: event failed %d times, dropping it as poison: %s",
                      self.key, attempts, exc)
            self.remove(entry)
            return True
        self._retry_later(entry)
        log.warning("%s: event failed (attempt %d), put back for retry: %s",
                    self.key, attempts, exc)
        return False

    def _retry_later(self, entry: bytes) -> int:
        """Back to the tail of the list; returns the attempts so far."""
        attempts = int(self.client.hincrby(self.attempts_key, _digest(entry), 1))
        pipe = self.client.pipeline()  # MULTI: never in both lists, never in neither
        pipe.lrem(self.processing, 1, entry)
        pipe.rpush(self.key, entry)
        pipe.execute()
        return attempts


def _digest(entry: bytes | str) -> str:
    data = entry.encode() if isinstance(entry, str) else entry
    return hashlib.sha256(data).hexdigest()[:32]
