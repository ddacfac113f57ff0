"""The backlog's first half: make sure every object of a source has a document row.

A nightly full listing is the safety net under live drops (a lost event, a key the poller's tail
did not reach yet, a watcher that was down). Registration is idempotent, so what is known costs
one SELECT per chunk; what is new is returned for ingestion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from pipelines.s3 import PollMark, S3Options, S3Source, make_client, object_uri, parse_s3_uri, poll
from pipelines.sources import LocalSource, path_to_uri
from workers.intake.registration import register_documents


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
