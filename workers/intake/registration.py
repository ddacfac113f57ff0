"""The one registration path: document references (pipelines.sources.DocumentRef) from any
source -> document rows, once each; and the listings that feed it: `watch`'s poll of an S3
prefix (``poll_and_register``, with its stored mark), the backlog's full scan of a source
(``scan_source``), and the documents an interrupted embedded watcher left unprocessed
(``received_under``).

Idempotent on (uri, etag or sha256): a re-listed object, a redelivered event or a second drop
of the same file registers nothing new. References that are not documents get a SKIPPED row
with the reason, so they are never looked at again. What is already known costs one SELECT per
chunk and no screening; network work (sniffing the first bytes of an S3 key with no known
suffix, the source's ``screen``) happens before the write transaction, so no database lock is
held across an HTTP call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from db.models import Document
from db.repository import (
    get_watermark,
    mark_document,
    register_document,
    set_watermark,
    version_key,
)
from db.session import session_scope
from db.states import DocumentState
from pipelines.errors import one_line
from pipelines.s3 import (
    PollMark,
    PollResult,
    S3Options,
    S3Source,
    make_client,
    object_uri,
    parse_s3_uri,
    poll,
    watermark_name,
)
from pipelines.sources import DocumentRef, LocalSource, path_to_uri

log = logging.getLogger(__name__)

_CHUNK = 200

Screen = Callable[[Sequence[DocumentRef]], list[DocumentRef]]


@dataclass
class Registered:
    ids: list[int] = field(default_factory=list)  # every reference's document, in order
    new_ids: list[int] = field(default_factory=list)  # documents registered now (RECEIVED)
    received_ids: list[int] = field(default_factory=list)  # documents RECEIVED now (new or not)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (uri, reason), registered now
    skipped_ids: list[int] = field(default_factory=list)  # SKIPPED rows, now or before
    known: int = 0  # already registered before: nothing done

    @property
    def documents(self) -> list[int]:
        """The ids that are documents (not SKIPPED), in order."""
        refused = set(self.skipped_ids)
        return [i for i in self.ids if i not in refused]


def _key(ref: DocumentRef) -> tuple[str, str]:
    return ref.uri, version_key(ref.etag, ref.sha256)


def _known(s: Session, refs: Sequence[DocumentRef]) -> dict[tuple[str, str], tuple[int, str]]:
    rows = s.execute(
        select(Document.source_uri, Document.version_key, Document.id, Document.state).where(
            tuple_(Document.source_uri, Document.version_key).in_([_key(r) for r in refs])
        )
    )
    return {(u, v): (int(i), st) for u, v, i, st in rows}


def register_documents(factory: sessionmaker[Session], refs: Iterable[DocumentRef], *,
                       screen: Screen | None = None) -> Registered:
    """Register ``refs`` (documents -> RECEIVED, refused ones -> SKIPPED with the reason);
    ``screen`` (the source's) adds reasons that need the bytes, for new references only.
    Commits; safe to call again with the same references, from several processes."""
    result = Registered()
    unique = list({_key(r): r for r in refs}.values())
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start:start + _CHUNK]
        with session_scope(factory) as s:
            known = _known(s, chunk)
        fresh = [r for r in chunk if _key(r) not in known]
        if screen is not None and fresh:
            fresh = screen(fresh)
        ids: dict[tuple[str, str], int] = {k: i for k, (i, _) in known.items()}
        for doc_id, state in known.values():
            result.known += 1
            _note(result, doc_id, state)
        with session_scope(factory) as s:
            for ref in fresh:
                doc_id, created = register_document(s, ref.uri, etag=ref.etag or None,
                                                   sha256=ref.sha256 or None)
                ids[_key(ref)] = doc_id
                if not created:  # a concurrent registrar got there first
                    result.known += 1
                    state = s.get(Document, doc_id).state  # type: ignore[union-attr]
                elif ref.skip:
                    mark_document(s, doc_id, DocumentState.SKIPPED, error=one_line(ref.skip))
                    result.skipped.append((ref.uri, ref.skip))
                    state = DocumentState.SKIPPED.value
                else:
                    result.new_ids.append(doc_id)
                    state = DocumentState.RECEIVED.value
                _note(result, doc_id, state)
        result.ids += [ids[_key(r)] for r in chunk]
    for uri, reason in result.skipped:
        log.info("skipped %s: %s", one_line(uri), reason)
    return result


def _note(result: Registered, doc_id: int, state: str) -> None:
    if state == DocumentState.SKIPPED.value:
        result.skipped_ids.append(doc_id)
    elif state == DocumentState.RECEIVED.value:
        result.received_ids.append(doc_id)


# --- the backlog's scan: a full listing is the safety net under live drops (a lost event, a key
# the poller's tail did not reach yet, a watcher that was down); what is new goes to ingest.

@dataclass
class ScanResult:
    prefix: str  # source_uri prefix of the source's documents in the store
    new_ids: list[int] = field(default_factory=list)
    skipped: int = 0
    known: int = 0


def source_prefix(source: str) -> str:
    """The ``documents.source_uri`` prefix under which a source's documents are stored."""
    if source.startswith("s3://"):
        loc = parse_s3_uri(source)
        return object_uri(loc.bucket, loc.prefix)
    path = Path(source)
    uri = path_to_uri(path)
    return uri + "/" if path.is_dir() else uri


def scan_source(sessions: sessionmaker[Session], source: str,
                s3: S3Options | None = None) -> ScanResult:
    """Register every object of ``source`` (an s3:// prefix or a local file/folder)."""
    result = ScanResult(source_prefix(source))
    if source.startswith("s3://"):
        options = s3 or S3Options()
        s3_source = S3Source(source, make_client(options), options)
        listed = poll(s3_source, PollMark(), force_sweep=True).objects
        got = register_documents(sessions, s3_source.refs(listed), screen=s3_source.screen)
    else:
        got = register_documents(sessions, LocalSource([source]))
    result.new_ids, result.skipped, result.known = got.new_ids, len(got.skipped), got.known
    return result


# --- `watch`: one poll of an S3 prefix, and what an interrupted embedded watcher left behind.

@dataclass
class Polled:
    listing: PollResult
    registered: Registered


def poll_and_register(sessions: sessionmaker[Session], source: S3Source) -> Polled:
    """One poll (tail or sweep, pipelines.s3.poll) of ``source``, its candidates registered.
    The mark is stored only after the registrations commit: a crash in between re-lists, which
    is a no-op."""
    name = watermark_name(source.location)
    with session_scope(sessions) as s:
        mark = PollMark.from_json(get_watermark(s, name))
    listing = poll(source, mark)
    got = register_documents(sessions, source.refs(listing.objects), screen=source.screen)
    with session_scope(sessions) as s:
        set_watermark(s, name, listing.mark.to_json())
    return Polled(listing, got)


def received_under(sessions: sessionmaker[Session], source: S3Source) -> list[int]:
    """Documents under the source's prefix registered but never ingested (a watcher stopped
    between committing the row and running it), in id order."""
    prefix = object_uri(source.location.bucket, source.location.prefix)
    with session_scope(sessions) as s:
        return [int(i) for i in s.execute(
            select(Document.id).where(
                Document.state == DocumentState.RECEIVED.value,
                Document.source_uri.startswith(prefix, autoescape=True),
            ).order_by(Document.id)).scalars()]
