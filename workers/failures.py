"""Transient or permanent: the one place that decides whether a failed step is worth another try.

Transient (retry with backoff; the document or pages stay in their working state, so a retry or
the reconciler picks them up): the store, broker or object store being unreachable, slow or
briefly overloaded, or a worker shutting down. Permanent (the document or pages go FAILED with
the reason): a bad document, a bug, an access error, an object that is gone.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError

from classifier.stage_batcher import BatcherStopped
from pipelines.errors import DocumentError
from pipelines.s3 import ObjectChanged

# Worth another try by type alone. botocore's ConnectionError covers EndpointConnectionError,
# ConnectTimeoutError and ProxyConnectionError; HTTPClientError covers ReadTimeoutError and
# ConnectionClosedError (a connection dropped mid-response).
TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    OperationalError, DBAPIError, ConnectionError, TimeoutError, OSError, BatcherStopped,
    BotoConnectionError, HTTPClientError,
    RedisConnectionError, RedisTimeoutError, KombuOperationalError,
)
# Never worth another try, whatever they also subclass: the input itself is the problem.
PERMANENT_TYPES: tuple[type[BaseException], ...] = (DocumentError, ObjectChanged)

# S3 (and S3-compatible) error codes that mean "later", not "never".
TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestLimitExceeded", "TooManyRequests", "TooManyRequestsException",
    "ProvisionedThroughputExceededException", "ServiceUnavailable", "ServiceUnavailableException",
    "InternalError", "InternalFailure", "RequestTimeout", "RequestTimeoutException",
    "OperationAborted", "500", "502", "503", "504",
})


def is_transient(exc: BaseException) -> bool:
    """True when `exc` is worth a retry (see the module docstring)."""
    if isinstance(exc, PERMANENT_TYPES):
        return False
    if isinstance(exc, ClientError):
        return _client_error_is_transient(exc.response)
    return isinstance(exc, TRANSIENT_TYPES)


def _client_error_is_transient(response: Any) -> bool:
    response = response if isinstance(response, dict) else {}
    code = str((response.get("Error") or {}).get("Code") or "")
    if code in TRANSIENT_CODES:
        return True
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    try:
        status = int(status)
    except (TypeError, ValueError):
        return False
    return status >= 500 or status == 429
