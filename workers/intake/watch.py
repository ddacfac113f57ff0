"""The store side of `doctriage watch`: one poll of an S3 prefix (read the stored mark, list,
register what is new, store the mark after the rows commit) and the documents an interrupted
embedded watcher left registered but never ingested."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Document
from db.repository import get_watermark, set_watermark
from db.session import session_scope
from db.states import DocumentState
from pipelines.s3 import PollMark, PollResult, S3Source, object_uri, poll, watermark_name
from workers.intake.registration import Registered, register_documents


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
