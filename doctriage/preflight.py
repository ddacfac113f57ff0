"""Start-up checks of the outside services a command is about to use: the broker
(DOCTRIAGE_BROKER_URL) and S3 (DOCTRIAGE_S3_ENDPOINT_URL, for s3:// artifacts and sources).

The database has its own check in `wiring.store`. Each failure is a `wiring.WiringError`: one
line naming the setting and the reason, URLs with their passwords masked, so every command
stops with `error: ...` and exit status 2 (doctriage/cli.py). Each check is one attempt under a
hard deadline (a few seconds): without it a worker retries a dead broker forever, `backlog`
prints a kombu traceback, and a bad S3 endpoint fails every document later in a worker instead
of the command now. A service that is only briefly down at start-up stops the command as well
(as the database check does); a supervisor's restart brings it back.

Standard library at import; kombu and boto3 load inside the checks that need them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable

from doctriage.settings import Settings
from doctriage.wiring import WiringError

CHECK_TIMEOUT_S = 5.0
# Broker transports reached over a socket; others (memory://, sqs:// through boto3, ...) get
# only the URL checks.
_SOCKET_TRANSPORTS = frozenset({"redis", "rediss", "amqp", "amqps", "pyamqp", "librabbitmq"})


def check_services(settings: Settings, *, broker: bool = False, artifacts: bool = True,
                   sources: Iterable[str] = ()) -> None:
    """The checks a command needs: the broker when it enqueues or consumes (and one is set), S3
    when the artifacts (`artifacts`) or any of `sources` live on s3://."""
    if broker:
        check_broker(settings)
    check_s3(settings, artifacts=artifacts, sources=sources)


def check_broker(settings: Settings, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """DOCTRIAGE_BROKER_URL, when set, is a URL of a transport kombu knows, and a socket
    broker answers one connection attempt within `timeout_s`."""
    url = settings.broker_url
    if not url:
        return  # wiring.queue_config says "no broker" where one is needed
    setting = "DOCTRIAGE_BROKER_URL"
    if "://" not in url:
        # the value is not echoed: a malformed URL may still hold a password
        raise WiringError(f"{setting} is not a broker URL (e.g. redis://127.0.0.1:6379/0)")
    from kombu import Connection
    from kombu.transport import resolve_transport

    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    try:
        resolve_transport(scheme)
    except (KeyError, ImportError):
        raise WiringError(
            f"{setting}: unsupported broker {scheme!r} (use redis://... or amqp://...)"
        ) from None
    if scheme not in _SOCKET_TRANSPORTS:
        return

    def connect() -> None:
        conn = Connection(url, connect_timeout=timeout_s,
                          transport_options={"socket_timeout": timeout_s})
        try:
            # two immediate attempts at most (kombu's max_retries=0 means "retry forever")
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                   interval_max=0)
        finally:
            conn.release()

    try:
        _within(timeout_s, connect)
    except ValueError as exc:  # a port or database number that is not a number, ...
        raise WiringError(f"{setting} is not a broker URL: {_reason(exc)}") from None
    except Exception as exc:
        raise WiringError(
            f"cannot reach the broker {_masked(url)} ({setting}): {_reason(exc)}"
        ) from None


def check_s3(settings: Settings, *, artifacts: bool = True, sources: Iterable[str] = (),
             timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """For each bucket in use (the artifact store's when `artifacts` and DOCTRIAGE_ARTIFACT_URL
    is s3://, and those of the s3:// `sources`): DOCTRIAGE_S3_ENDPOINT_URL is a URL, and S3
    there answers one HeadBucket within `timeout_s`. Any answer will do (a 403 or 404 is for the
    requests themselves to report); no answer, or no credentials, stops the command."""
    targets: dict[str, str] = {}  # bucket -> the setting or argument naming it
    if artifacts and settings.resolved_artifact_url.startswith("s3://"):
        targets[_bucket(settings.resolved_artifact_url, "DOCTRIAGE_ARTIFACT_URL: ")] = (
            f"DOCTRIAGE_ARTIFACT_URL={_masked(settings.resolved_artifact_url)}")
    for source in sources:
        if source.startswith("s3://"):
            targets.setdefault(_bucket(source), source)
    if not targets:
        return
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    endpoint = settings.s3_endpoint_url
    where = (f"{_masked(endpoint)} (DOCTRIAGE_S3_ENDPOINT_URL)" if endpoint
             else "AWS (no DOCTRIAGE_S3_ENDPOINT_URL)")
    config = Config(connect_timeout=timeout_s, read_timeout=timeout_s,
                    retries={"max_attempts": 1, "mode": "standard"})
    if endpoint:
        config = config.merge(Config(s3={"addressing_style": "path"}))
    try:
        client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=settings.s3_region, config=config)
    except ValueError as exc:  # botocore: "Invalid endpoint: ..."
        raise WiringError(
            f"DOCTRIAGE_S3_ENDPOINT_URL is not a URL (e.g. http://minio:9000): {_reason(exc)}"
        ) from None
    for bucket, named_by in targets.items():
        def head(bucket: str = bucket) -> None:
            with contextlib.suppress(ClientError):  # S3 answered
                client.head_bucket(Bucket=bucket)

        try:
            _within(timeout_s, head)
        except Exception as exc:
            raise WiringError(
                f"cannot reach S3 at {where} for {named_by}: {_reason(exc)}"
            ) from None


def _bucket(uri: str, setting: str = "") -> str:
    from pipelines.s3 import S3UriError, parse_s3_uri

    try:
        return parse_s3_uri(uri).bucket
    except S3UriError as exc:
        raise WiringError(f"{setting}{_reason(exc)}") from None


def _within(timeout_s: float, call: Callable[[], None]) -> None:
    """`call()` in a daemon thread, given `timeout_s` (a TLS handshake with a plain-text server,
    or a black-holed address, can outwait every client timeout); its error is re-raised."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=run, name="doctriage-preflight", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        raise TimeoutError(f"no answer within {timeout_s:g} s")
    if outcome[0] is not None:
        raise outcome[0]


def _masked(url: str) -> str:
    from workers.redaction import redact

    return redact(url)


def _reason(exc: BaseException) -> str:
    from workers.redaction import stored_error

    return stored_error(str(exc) or type(exc).__name__, limit=300)
