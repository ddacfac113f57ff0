"""Turn listed or notified S3 objects into document rows, once each.

Idempotent on (uri, etag): a re-listed object or a redelivered event registers nothing new.
Objects that are not documents get a SKIPPED row with the reason, so they are never looked at
again. Network work (sniffing the first bytes of a key with no known suffix) happens before
the write transaction, so no database lock is held across an HTTP call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from db.models import Document
from db.repository import mark_document, register_document, version_key
from db.session import session_scope
from db.states import DocumentState
from pipelines.s3 import S3Object, S3Source

log = logging.getLogger(__name__)

_CHUNK = 200


@dataclass
class IntakeResult:
    new_ids: list[int] = field(default_factory=list)  # registered now, to be ingested
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (uri, reason), registered now
    known: int = 0  # already registered before: nothing done


def _known(s: Session, objects: Sequence[S3Object]) -> set[tuple[str, str]]:
    pairs = [(o.uri, version_key(o.etag or None, None)) for o in objects]
    rows = s.execute(
        select(Document.source_uri, Document.version_key).where(
            tuple_(Document.source_uri, Document.version_key).in_(pairs)
        )
    )
    return {(u, v) for u, v in rows}


def register_objects(factory: sessionmaker[Session], source: S3Source,
                     objects: Sequence[S3Object]) -> IntakeResult:
    """Register ``objects`` (documents -> RECEIVED, others -> SKIPPED with a reason); commit.
    Returns what is new. Safe to call again with the same objects, from several processes."""
    result = IntakeResult()
    unique = list({(o.uri, o.etag): o for o in objects}.values())
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start:start + _CHUNK]
        with session_scope(factory) as s:
            known = _known(s, chunk)
        fresh = [o for o in chunk if (o.uri, version_key(o.etag or None, None)) not in known]
        result.known += len(chunk) - len(fresh)
        reasons = {o.uri: source.skip_reason(o) for o in fresh}
        with session_scope(factory) as s:
            for o in fresh:
                doc_id, created = register_document(s, o.uri, etag=o.etag or None)
                if not created:  # a concurrent registrar got there first
                    result.known += 1
                    continue
                reason = reasons[o.uri]
                if reason:
                    mark_document(s, doc_id, DocumentState.SKIPPED, error=reason)
                    result.skipped.append((o.uri, reason))
                else:
                    result.new_ids.append(doc_id)
    for uri, reason in result.skipped:
        log.info("skipped %s: %s", uri, reason)
    return result
