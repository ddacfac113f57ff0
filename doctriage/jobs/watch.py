"""The watch job: take new objects of an S3 prefix as documents, by polling the bucket (a
stored high-water mark keeps an idle poll at one request) or from the bucket's event
notifications (SQS, or MinIO's Redis target). Each object is registered once on (uri, etag)
(workers.intake.registration); non-documents are recorded SKIPPED with the reason. New documents
go to the orchestration seam: the ingest queue, or - with no broker - this process."""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctriage import preflight, wiring
from doctriage.jobs import JobError

if TYPE_CHECKING:
    from doctriage.settings import Settings

Say = Callable[[str], None]


@dataclass(frozen=True)
class WatchOptions:
    target: str  # s3://BUCKET/PREFIX
    sqs: str | None = None  # SQS queue URL receiving the bucket's event notifications
    redis_events: str | None = None  # Redis URL of MinIO's event list
    events_key: str = "doctriage:minio-events"
    once: bool = False  # one poll (or drain the events once), then return
    interval: float = 30.0  # seconds between polls
    sweep_every: float = 600.0  # seconds between full listings
    model: Path | None = None  # embedded mode's bundle

    @property
    def events(self) -> bool:
        return self.sqs is not None or self.redis_events is not None


def watch_prefix(settings: Settings, opts: WatchOptions, say: Say) -> None:
    """Watch opts.target until --once is done or SIGTERM; `say` gets one line per step."""
    from botocore.exceptions import BotoCoreError, ClientError

    from pipelines.s3 import S3Source, S3UriError, make_client, parse_s3_uri, register_s3_opener

    if opts.interval <= 0 or opts.sweep_every < 0:
        raise JobError("--interval must be positive and --sweep-every not negative")
    try:
        location = parse_s3_uri(opts.target)
    except S3UriError as exc:
        raise JobError(str(exc)) from None
    options = dataclasses.replace(wiring.s3_options(settings), sweep_every_s=opts.sweep_every)
    register_s3_opener(options)  # the ingest step opens s3:// URIs in this process
    try:
        sessions = wiring.store(settings)
        preflight.check_services(settings, broker=settings.broker_url is not None,
                                 sources=[opts.target])
        submit = _Submitter(settings, opts.model)
    except wiring.WiringError as exc:
        raise JobError(str(exc)) from None
    w = _Watch(sessions, S3Source(location, make_client(options), options), submit, opts.target,
               opts.once, say)
    signal.signal(signal.SIGTERM, w.stop)
    try:
        if not submit.celery:  # the embedded mode has no reconciler: take them here
            w.resume_leftovers()
        consumer = _consumer(w, options, opts) if opts.events else None
        w.serve(w.poll if consumer is None else lambda: w.drain_events(consumer),
                interval=None if opts.events else opts.interval)
    except (BotoCoreError, ClientError) as exc:
        raise JobError(f"{opts.target}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class _Submitter:
    """New document ids -> the orchestration seam: the ingest queue (CeleryOrchestrator), or
    the embedded runner's in-process orchestrator (model loaded once)."""

    def __init__(self, settings: Any, model: Path | None) -> None:
        self.settings = settings
        self.model = model
        self.celery = settings.broker_url is not None
        self._runtime: Any = None
        self._ctx: Any = None
        if self.celery:
            wiring.configure_celery(settings)
        else:
            self._ctx = wiring.step_context(settings)

    def __call__(self, sessions: Any, doc_ids: Sequence[int]) -> str:
        if not doc_ids:
            return ""
        if self.celery:
            from workers.tasks import CeleryOrchestrator

            CeleryOrchestrator().ingest(doc_ids)
            return f"{len(doc_ids)} queued for ingest"
        from tqdm import tqdm

        from workers.embedded import RunDisplay, run_documents

        if self._runtime is None:
            ctx = self._ctx
            self._runtime = wiring.classify_runtime(
                self.settings, self.model,
                policies=wiring.policy_feed(self.settings, lambda: ctx.sessions))
        # disable=None: the bar is drawn only when stderr is a terminal
        with tqdm(total=len(doc_ids), unit="doc", desc="documents", leave=False,
                  disable=None) as bar:
            summary = run_documents(self._ctx, self._runtime, doc_ids, display=RunDisplay(
                progress=lambda e, n: bar.update(n) if e == "document" else None))
        failed = len(summary.failed_documents)
        return (f"{summary.documents} ingested ({failed} failed), {summary.pages} pages, "
                f"classes: {', '.join(f'{k} {v}' for k, v in summary.pages_per_class.items())}")


@dataclasses.dataclass
class _Watch:
    """One watched prefix: each step registers what it found (workers.intake.registration)
    and hands the new document ids to the orchestration seam (`submit`)."""

    sessions: Any
    source: Any  # pipelines.s3.S3Source
    submit: _Submitter
    target: str
    once: bool
    say: Say
    stopping: bool = False

    def serve(self, step: Callable[[], None], *, interval: float | None) -> None:
        """Run `step` until --once or SIGTERM; `interval`: seconds between polls (None: event
        consumers wait in their own long poll)."""
        while True:
            step()
            if not self.submit.celery:  # no reconciler in embedded mode: retry due failures
                self.retry_transient()
            if self.once or self.stopping:
                break
            if interval is not None:
                self._sleep(interval)
            if self.stopping:
                break

    def stop(self, *_: Any) -> None:
        """SIGTERM: finish the step under way, then return."""
        self.stopping = True

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.5))

    def resume_leftovers(self) -> None:
        from workers.intake.registration import received_under

        left = received_under(self.sessions, self.source)
        if left:
            self.say(f"{self.target}: resuming {len(left)} registered, unprocessed documents")
            self.say(self.submit(self.sessions, left))

    def retry_transient(self) -> None:
        """What the reconciler does with a broker: documents FAILED for a transient reason whose
        backoff has passed are ingested again (workers.retrying)."""
        from workers.retrying import retry_transient_failures

        ctx = self.submit._ctx
        ids = retry_transient_failures(ctx.sessions, ctx.retry)
        if ids:
            self.say(f"{self.target}: retrying {len(ids)} documents that failed for a transient "
                       f"reason; {self.submit(self.sessions, ids)}")

    def poll(self) -> None:
        from workers.intake.registration import poll_and_register

        polled = poll_and_register(self.sessions, self.source)
        result, got = polled.listing, polled.registered
        kind = "sweep" if result.swept else "tail"
        line = (f"{self.target}: {kind} listed {result.listed} ({result.list_requests} "
                f"requests), {len(got.new_ids)} new, {len(got.skipped)} skipped, "
                f"{got.known} known")
        done = self.submit(self.sessions, got.new_ids)
        self.say(line + (f"; {done}" if done else ""))

    def drain_events(self, consumer: Any) -> None:
        """Receive event messages (with --once: until none is left), register their objects,
        then submit what is new."""
        from workers.intake.registration import register_documents

        new: list[int] = []
        counts = {"skipped": 0, "known": 0, "messages": 0}

        def handle(objects: Sequence[Any]) -> None:
            # commits before returning (the consumer deletes the message only then)
            got = register_documents(self.sessions, self.source.refs(objects),
                                      screen=self.source.screen)
            new.extend(got.new_ids)
            counts["skipped"] += len(got.skipped)
            counts["known"] += got.known

        while True:
            stats = consumer.poll_once(handle)
            counts["messages"] += stats.received
            if not self.once or stats.received == 0:
                break
        if counts["messages"]:
            done = self.submit(self.sessions, new)
            self.say(f"{self.target}: {counts['messages']} messages, {len(new)} new, "
                       f"{counts['skipped']} skipped, {counts['known']} known"
                       + (f"; {done}" if done else ""))


def _consumer(w: _Watch, options: Any, args: WatchOptions) -> Any:
    """The bucket's event notifications: SQS, or MinIO's Redis notification target."""
    wait_s = 1 if w.once else 20
    if args.redis_events:  # pipelines/minio_events.py
        from pipelines.minio_events import RedisEventConsumer

        consumer = RedisEventConsumer.from_url(args.redis_events, args.events_key,
                                               w.source.location, wait_s=wait_s)
        consumer.recover()
        return consumer
    from pipelines.s3 import make_client
    from pipelines.sqs import SqsConsumer

    return SqsConsumer(make_client(options, "sqs"), args.sqs, w.source.location, wait_s=wait_s)
