"""`doctriage submit PATH...`: register documents in the store and enqueue their ingestion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from doctriage.commands._common import fail


def submit(
    paths: Annotated[list[Path], typer.Argument(help="PDF/TIFF/PNG/JPEG files or folders.")],
) -> None:
    """Register each document once (by path and sha256) and put it on the ingest queue."""
    from doctriage import preflight, wiring
    from doctriage.settings import get_settings
    from pipelines.sources import LocalSource

    settings = get_settings()
    source = LocalSource(paths, follow_symlinks=settings.follow_symlinks)
    try:
        files = source.files()
        wiring.configure_celery(settings)
        sessions = wiring.store(settings)
        preflight.check_services(settings, broker=True)  # before anything is registered
    except (FileNotFoundError, wiring.WiringError) as exc:
        raise fail(str(exc)) from None
    if not files:
        raise fail("no documents found (looked for .pdf .png .jpg .jpeg .tif .tiff)")
    # Only now: a bad path above is reported without loading the store and task modules.
    from db.models import Document
    from db.repository import register_document
    from db.session import session_scope
    from db.states import DocumentState
    from workers.embedded import record_skipped
    from workers.tasks import CeleryOrchestrator

    queue = CeleryOrchestrator()

    created = queued = documents = 0
    for uri, sha in source:  # a file deleted since it was listed is left out (a warning)
        documents += 1
        with session_scope(sessions) as s:
            doc_id, new = register_document(s, uri, sha256=sha)
            doc = s.get(Document, doc_id)
            state = doc.state if doc is not None else None
        created += new
        # A new document, or one never ingested, goes on the queue; done ones are not redone.
        if new or state == DocumentState.RECEIVED:
            try:
                queue.ingest([doc_id])
            except Exception as exc:  # the broker is down or misconfigured
                raise fail(f"cannot enqueue: {' '.join(str(exc).split())}") from None
            queued += 1
    with session_scope(sessions) as s:
        skipped = len(record_skipped(s, source.skipped))  # symlinks leaving their folder
    typer.echo(
        f"submit: {documents} documents, {created} new, {queued} queued for ingest"
        + (f", {skipped} skipped" if skipped else "")
    )


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
