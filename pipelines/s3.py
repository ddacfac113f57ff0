"""S3 (and S3-compatible) buckets as a document source.

Three jobs, one module: name objects (``s3://bucket/key`` URIs), decide whether an object is a
document at all (folders, zero bytes, unknown types and hostile keys are skipped with a reason),
and find what is new in a bucket without listing all of it on every poll.

Why the poller has two kinds of listing: ListObjectsV2 returns keys in UTF-8 byte order, never
by time, so no single "since" cursor is both cheap and correct.
- A *tail* listing (``StartAfter`` = the greatest key seen) costs one request when nothing
  changed and finds at once every new key that sorts after all older ones - the usual layout
  for drops named by date, sequence or uuid-under-date.
- A *sweep* (the whole prefix) finds the rest: keys that sort before the high-water key, and
  objects replaced under an old key (new etag). Only objects whose LastModified is after the
  previous sweep's start, minus a lag, are candidates; the lag covers clock skew and multipart
  uploads, whose LastModified is the time the upload *started*. A sweep runs when the last one
  is older than ``sweep_every_s``, so its cost is bounded per unit of time, not per poll.
Registration downstream is idempotent on (uri, etag), so overlaps cost a no-op, never a
duplicate. With SQS notifications (pipelines/sqs.py) no listing is needed at all.

This module takes plain options and never reads doctriage settings.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipelines.artifacts import ArtifactNotFound
from pipelines.sniff import HEAD_BYTES, detect_kind
from pipelines.sources import DOCUMENT_SUFFIXES, DocumentRef, register_opener

log = logging.getLogger(__name__)

SNIFF_BYTES = HEAD_BYTES  # a PDF header may follow some junk within the first 1 KiB
# Objects are spooled to a temporary file as they stream in (decoders need random access);
# only this much stays in memory.
SPOOL_IN_MEMORY = 8 * 1024 * 1024


class S3UriError(ValueError):
    """Not an ``s3://bucket[/prefix]`` URI."""


class S3SourceError(FileNotFoundError):
    """A bucket or prefix that cannot be listed (missing bucket, no access, bad uri). A
    FileNotFoundError so callers treat it like a missing folder: one line, exit status 2."""


class ObjectChanged(RuntimeError):
    """The object was replaced or deleted after it was listed (its etag no longer matches)."""


@dataclass(frozen=True)
class S3Options:
    endpoint_url: str | None = None
    region: str = "us-east-1"
    sweep_every_s: float = 600.0  # a full listing at most this often
    lag_s: float = 900.0  # sweep look-back before the previous sweep (skew, multipart uploads)
    page_size: int = 1000  # keys per ListObjectsV2 request (S3's maximum)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    etag: str  # without the quotes S3 puts around it
    size: int | None = None
    last_modified: datetime | None = None
    version_id: str | None = None

    @property
    def uri(self) -> str:
        return object_uri(self.bucket, self.key)


def parse_s3_uri(uri: str) -> S3Location:
    """``s3://bucket/prefix`` -> location. The prefix is used as S3 uses it (a string prefix)."""
    if not uri.startswith("s3://"):
        raise S3UriError(f"not an s3:// uri: {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket or "%" in bucket or any(c.isspace() for c in bucket):
        raise S3UriError(f"no valid bucket name in {uri!r}")
    return S3Location(bucket, unquote(prefix))


# Escaped in URIs so any key round-trips and a stored URI never holds control bytes (PostgreSQL
# text refuses NUL); everything else - spaces, commas, non-ASCII letters - stays readable.
def _escape_key(key: str) -> str:
    return "".join(
        quote(ch, safe="") if ch in "%?#" or unicodedata.category(ch).startswith("C") else ch
        for ch in key
    )


def object_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{_escape_key(key)}"


def split_object_uri(uri: str) -> tuple[str, str]:
    loc = parse_s3_uri(uri)
    if not loc.prefix:
        raise S3UriError(f"no object key in {uri!r}")
    return loc.bucket, loc.prefix


def key_problem(key: str) -> str | None:
    """Why a key must not be processed (path traversal, control or undecodable bytes), or None."""
    if "\x00" in key:
        return "rejected key: contains NUL"
    bad = [ch for ch in key if unicodedata.category(ch) in ("Cc", "Cs")]
    if bad:
        return f"rejected key: contains control or undecodable characters {''.join(bad)!r}"
    if any(part in ("..", ".") for part in key.split("/")):
        return "rejected key: '.' or '..' path segment"
    return None


def sniff_type(head: bytes) -> str | None:
    return detect_kind(head)


def skip_reason(obj: S3Object, head: bytes | None = None) -> str | None:
    """Why ``obj`` is not a document, or None when it is one. ``head`` (the first bytes) is
    only needed - and only looked at - when the key has no known document suffix."""
    problem = key_problem(obj.key)
    if problem:
        return problem
    if obj.key.endswith("/"):
        return "folder marker"
    if obj.size == 0:
        return "zero bytes"
    if needs_sniff(obj):
        kind = sniff_type(head or b"")
        if kind is None:
            suffix = PurePosixPath(obj.key).suffix.lower() or "(no suffix)"
            return f"unknown type: suffix {suffix}, content is not PDF/TIFF/PNG/JPEG"
    return None


def needs_sniff(obj: S3Object) -> bool:
    return PurePosixPath(obj.key).suffix.lower() not in DOCUMENT_SUFFIXES


def _listed_ok(obj: S3Object) -> bool:
    """Nothing the listing alone refuses (the checks skip_reason makes before sniffing)."""
    return not (key_problem(obj.key) or obj.key.endswith("/") or obj.size == 0)


def make_client(options: S3Options, service: str = "s3") -> Any:
    """A boto3 client for ``service`` ("s3" or "sqs"). Credentials come from the usual boto3
    chain (env, profile, instance role); ``endpoint_url`` points at MinIO, moto, ...."""
    config = Config(retries={"max_attempts": 5, "mode": "standard"})
    if service == "s3" and options.endpoint_url:
        config = config.merge(Config(s3={"addressing_style": "path"}))
    return boto3.session.Session().client(
        service, endpoint_url=options.endpoint_url, region_name=options.region, config=config
    )


def _strip_etag(etag: str | None) -> str:
    return (etag or "").strip('"')


class S3Source:
    """The objects under one ``s3://bucket/prefix``. Implements the DocumentSource protocol
    (iterate DocumentRefs, ``screen``, ``open(uri)``) plus what the poller needs."""

    def __init__(self, location: S3Location | str, client: Any, options: S3Options = S3Options()):
        self.location = parse_s3_uri(location) if isinstance(location, str) else location
        self.client = client
        self.options = options
        self.list_requests = 0  # ListObjectsV2 calls made, for cost checks and logs

    def list_objects(self, start_after: str | None = None) -> Iterator[S3Object]:
        params: dict[str, Any] = {
            "Bucket": self.location.bucket,
            "Prefix": self.location.prefix,
            "PaginationConfig": {"PageSize": self.options.page_size},
        }
        if start_after:
            params["StartAfter"] = start_after
        for page in self.client.get_paginator("list_objects_v2").paginate(**params):
            self.list_requests += 1
            for item in page.get("Contents", []):
                yield S3Object(
                    bucket=self.location.bucket,
                    key=item["Key"],
                    etag=_strip_etag(item.get("ETag")),
                    size=item.get("Size"),
                    last_modified=item.get("LastModified"),
                )

    def head_bytes(self, obj: S3Object, n: int = SNIFF_BYTES) -> bytes:
        """The first ``n`` bytes (a ranged GET), for type sniffing. b"" if gone or changed."""
        try:
            resp = self.client.get_object(
                Bucket=obj.bucket, Key=obj.key, Range=f"bytes=0-{n - 1}", **_version_args(obj)
            )
        except ClientError as exc:
            log.warning("could not read the head of %s: %s", obj.uri, exc)
            return b""
        body = resp["Body"]
        try:
            return body.read(n)
        finally:
            body.close()

    def skip_reason(self, obj: S3Object) -> str | None:
        if key_problem(obj.key) or obj.key.endswith("/") or obj.size == 0 or not needs_sniff(obj):
            return skip_reason(obj)
        return skip_reason(obj, self.head_bytes(obj))

    def refs(self, objects: Iterable[S3Object]) -> list[DocumentRef]:
        """Listed objects as document references, with the reasons a listing tells (key,
        folder marker, zero bytes); an unknown type is found by ``screen``."""
        return [DocumentRef(o.uri, etag=o.etag, size=o.size,
                            skip=None if needs_sniff(o) and _listed_ok(o) else skip_reason(o))
                for o in objects]

    def screen(self, refs: Sequence[DocumentRef]) -> list[DocumentRef]:
        """Sniff (ranged GET) the refs of this bucket whose key has no known document suffix
        and that nothing else refused; the others come back as they are."""
        out = []
        for ref in refs:
            obj = self._object_of(ref)
            if obj is not None and ref.skip is None and needs_sniff(obj):
                ref = replace(ref, skip=self.skip_reason(obj))
            out.append(ref)
        return out

    def _object_of(self, ref: DocumentRef) -> S3Object | None:
        if not ref.uri.startswith(object_uri(self.location.bucket, self.location.prefix)):
            return None  # another source's
        bucket, key = split_object_uri(ref.uri)
        return S3Object(bucket, key, ref.etag or "", size=ref.size)

    def __iter__(self) -> Iterator[DocumentRef]:
        """Everything under the prefix, listed once (see ``refs``)."""
        try:
            yield from self.refs(list(self.list_objects()))
        except (BotoCoreError, ClientError) as exc:
            raise S3SourceError(f"{self.location.uri}: cannot list ({exc})") from None

    def open(self, uri: str, etag: str | None = None, version_id: str | None = None) -> BinaryIO:
        """A seekable stream of the object's bytes. With ``etag`` (or ``version_id``) a
        replaced object raises ObjectChanged instead of silently handing out other bytes."""
        bucket, key = split_object_uri(uri)
        return open_object(self.client, S3Object(bucket, key, etag or "", version_id=version_id))


def _version_args(obj: S3Object) -> dict[str, str]:
    if obj.version_id:
        return {"VersionId": obj.version_id}
    if obj.etag:
        return {"IfMatch": f'"{obj.etag}"'}
    return {}


def open_object(client: Any, obj: S3Object) -> BinaryIO:
    try:
        resp = client.get_object(Bucket=obj.bucket, Key=obj.key, **_version_args(obj))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "412", "NoSuchKey", "NoSuchVersion", "404"):
            raise ObjectChanged(
                f"{obj.uri}: object replaced or deleted since listed ({code})"
            ) from None
        raise
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (returned)
    body = resp["Body"]
    try:
        for chunk in body.iter_chunks(chunk_size=1 << 20):
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    finally:
        body.close()
    spool.seek(0)
    return spool  # type: ignore[return-value]


class LazyClient:
    """One boto3 client per process, built on first use: a client must not cross a fork (its
    connection pool would be shared by parent and child)."""

    def __init__(self, options: S3Options, service: str = "s3") -> None:
        self.options = options
        self.service = service
        self._client: tuple[int, Any] | None = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._client is None or self._client[0] != os.getpid():
                self._client = (os.getpid(), make_client(self.options, self.service))
            return self._client[1]


def register_s3_opener(options: S3Options) -> None:
    """Let ``pipelines.sources.open_uri`` open s3:// URIs with a client built from ``options``
    (called by the wiring that has the settings; the client is built lazily, per process)."""
    client = LazyClient(options)

    def _open(uri: str, etag: str | None = None) -> BinaryIO:
        bucket, key = split_object_uri(uri)
        return open_object(client.get(), S3Object(bucket, key, _strip_etag(etag)))

    register_opener("s3", _open)


class S3ArtifactStore:
    """Page artifacts under an ``s3://bucket/prefix`` (the ArtifactStore protocol)."""

    def __init__(self, location: S3Location, client: Any | LazyClient) -> None:
        self.location = location
        self._client = client

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None,
                 region: str = "us-east-1") -> S3ArtifactStore:
        loc = parse_s3_uri(url)
        prefix = loc.prefix if not loc.prefix or loc.prefix.endswith("/") else loc.prefix + "/"
        return cls(S3Location(loc.bucket, prefix), LazyClient(S3Options(endpoint_url, region)))

    @property
    def client(self) -> Any:
        return self._client.get() if isinstance(self._client, LazyClient) else self._client

    def _key(self, key: str) -> str:
        problem = key_problem(key)
        if problem or key.startswith("/"):
            raise ValueError(f"artifact key {key!r}: {problem or 'absolute key'}")
        return self.location.prefix + key

    def put(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.location.bucket, Key=self._key(key), Body=data)
        return key

    def get(self, key: str) -> bytes:
        try:
            resp = self.client.get_object(Bucket=self.location.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ArtifactNotFound(key) from None
            raise
        body = resp["Body"]
        try:
            return body.read()
        finally:
            body.close()


# --- polling -----------------------------------------------------------------------------------


@dataclass
class PollMark:
    """What the poller remembers between polls (stored as JSON in a watermark row)."""

    last_key: str | None = None  # greatest key seen under the prefix
    swept_at: datetime | None = None  # when the last full sweep *started*

    def to_json(self) -> str:
        return json.dumps({
            "v": 1,
            "last_key": self.last_key,
            "swept_at": self.swept_at.isoformat() if self.swept_at else None,
        })

    @classmethod
    def from_json(cls, value: str | None) -> PollMark:
        if not value:
            return cls()
        try:
            doc = json.loads(value)
            swept = doc.get("swept_at")
            return cls(doc.get("last_key"), datetime.fromisoformat(swept) if swept else None)
        except (ValueError, TypeError, AttributeError):
            log.warning("unreadable S3 watermark %r; starting with a full sweep", value)
            return cls()


@dataclass
class PollResult:
    objects: list[S3Object]
    mark: PollMark
    swept: bool
    list_requests: int
    listed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def poll(source: S3Source, mark: PollMark, now: datetime | None = None,
         force_sweep: bool = False) -> PollResult:
    """Candidates that may be new since ``mark``, and the mark to store once they are
    registered (store it only after the registrations commit: a crash in between re-lists,
    which the idempotent registration absorbs)."""
    now = now or datetime.now(UTC)
    before = source.list_requests
    sweep = (
        force_sweep
        or mark.swept_at is None
        or (now - mark.swept_at).total_seconds() >= source.options.sweep_every_s
    )
    if sweep:
        cutoff = mark.swept_at - timedelta(seconds=source.options.lag_s) if mark.swept_at else None
        listed = list(source.list_objects())
        objects = [o for o in listed
                   if cutoff is None or o.last_modified is None or o.last_modified >= cutoff]
        new_mark = PollMark(_max_key(mark.last_key, listed), now)
    else:
        listed = list(source.list_objects(start_after=mark.last_key))
        objects = listed
        new_mark = PollMark(_max_key(mark.last_key, listed), mark.swept_at)
    return PollResult(objects, new_mark, sweep, source.list_requests - before, len(listed))


def _max_key(current: str | None, objects: list[S3Object]) -> str | None:
    # Python compares str by code point, which is the UTF-8 byte order S3 lists in.
    keys = [o.key for o in objects]
    if current is not None:
        keys.append(current)
    return max(keys) if keys else None


def watermark_name(location: S3Location) -> str:
    return f"s3-poll:{location.bucket}/{location.prefix}"
