"""The ids a log line is about (document, pages, task), carried in context variables so that
every record logged while a task runs can name them without each call passing them along.

Set by the Celery signal handlers (workers/task_signals.py) around every task, or with
`bound(...)` around any block; read by the JSON log formatter (doctriage/logging_setup.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

_ids: ContextVar[dict[str, Any] | None] = ContextVar("doctriage_log_ids", default=None)


def current() -> dict[str, Any]:
    return dict(_ids.get() or {})


def bind(**ids: Any) -> Token:
    """Add ids to the current context; returns the token for `unbind`."""
    merged = {**(_ids.get() or {}), **{k: v for k, v in ids.items() if v is not None}}
    return _ids.set(merged)


def unbind(token: Token) -> None:
    _ids.reset(token)


@contextmanager
def bound(**ids: Any) -> Iterator[None]:
    token = bind(**ids)
    try:
        yield
    finally:
        unbind(token)
