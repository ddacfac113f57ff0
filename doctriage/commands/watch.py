"""`doctriage watch s3://BUCKET/PREFIX [--sqs QUEUE_URL] [--once] [--interval S]`: take new
objects of an S3 prefix as documents, by polling the bucket (a stored high-water mark keeps an
idle poll at one request) or from S3 event notifications delivered to SQS. Each object is
registered once on (uri, etag); non-documents are recorded SKIPPED with the reason. New
documents go to the ingest queue, or - with no broker configured - are classified here."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from doctriage.commands._common import fail, takes_arguments


@dataclasses.dataclass(frozen=True)
class WatchArguments:
    target: Annotated[str, typer.Argument(help="s3://BUCKET/PREFIX to take documents from.")]
    sqs: Annotated[str | None, typer.Option(
        "--sqs", help="SQS queue URL receiving the bucket's event notifications.")] = None
    redis_events: Annotated[str | None, typer.Option(
        "--redis-events", help="Redis URL of the list MinIO publishes the bucket's events to "
        "(its Redis notification target, access format; key from --events-key).")] = None
    events_key: Annotated[str, typer.Option(help="Redis list key of --redis-events.")] \
        = "doctriage:minio-events"
    once: Annotated[bool, typer.Option(
        "--once", help="One poll (or drain the queue once), then exit.")] = False
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 30.0
    sweep_every: Annotated[float, typer.Option(
        help="Seconds between full listings (keys sorting before the newest one, replaced "
             "objects); polls in between list only keys after the newest seen.")] = 600.0
    model: Annotated[Path | None, typer.Option("--model", help="Model bundle (embedded).")] \
        = None


@takes_arguments(WatchArguments)
def watch(args: WatchArguments) -> None:
    """Watch an S3 prefix and process each new document once."""
    from doctriage.jobs import JobError
    from doctriage.jobs.watch import WatchOptions, watch_prefix
    from doctriage.settings import get_settings

    try:
        watch_prefix(get_settings(), WatchOptions(**dataclasses.asdict(args)), typer.echo)
    except JobError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)
