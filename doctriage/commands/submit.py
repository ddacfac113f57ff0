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
    from workers.intake.registration import register_documents
    from workers.tasks import CeleryOrchestrator

    # A file deleted since it was listed is left out (a warning); symlinks leaving their folder
    # are recorded SKIPPED.
    got = register_documents(sessions, source)
    documents, created, skipped = len(got.documents), len(got.new_ids), len(got.skipped_ids)
    # A new document, or one never ingested, goes on the queue; done ones are not redone.
    queued = len(got.received_ids)
    try:
        CeleryOrchestrator().ingest(got.received_ids)
    except Exception as exc:  # the broker is down or misconfigured
        raise fail(f"cannot enqueue: {' '.join(str(exc).split())}") from None
    typer.echo(
        f"submit: {documents} documents, {created} new, {queued} queued for ingest"
        + (f", {skipped} skipped" if skipped else "")
    )


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
