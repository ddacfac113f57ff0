"""What every command shares: the one-line error with exit status 2, the date options' parser,
and quieting a logger for the length of a command without leaving it changed for whoever runs the
next one in-process."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar

import typer

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str) -> typer.Exit:
    """Print `error: message` on stderr; raise the returned Exit (status 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def parse_date(value: str | None, flag: str, *, through_day: bool = False) -> datetime | None:
    """A date option as an aware UTC datetime (no zone: UTC); None when not given.
    through_day: a bare date (YYYY-MM-DD) means the end of that day, for an exclusive bound."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{flag} {value!r}: not a date (YYYY-MM-DD or ISO 8601)") from None
    if through_day and len(value) == len("YYYY-MM-DD"):
        when += timedelta(days=1)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def quiet_workers_logs(command: Callable[P, R]) -> Callable[P, R]:
    """For commands that report failures in their own summary: the workers' per-document error
    logs would repeat them on stderr. (functools.wraps keeps the signature typer reads.)"""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with quiet_logger("workers"):
            return command(*args, **kwargs)

    return wrapper


def set_torch_threads(threads: int | None) -> None:
    """--threads N: torch's CPU threads (1 is fastest on a busy machine); None leaves torch's."""
    if threads is None:
        return
    if threads < 1:
        raise fail("--threads must be at least 1")
    import torch  # only when asked: most commands never load torch

    torch.set_num_threads(threads)
