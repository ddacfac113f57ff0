"""What every command shares: the one-line error with exit status 2, the date options' parser,
and quieting a logger for the length of a command without leaving it changed for whoever runs the
next one in-process."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar, get_type_hints

import typer

P = ParamSpec("P")
R = TypeVar("R")
A = TypeVar("A")


def takes_arguments(arguments: type[A]) -> Callable[[Callable[[A], R]], Callable[..., R]]:
    """Declare a command's arguments and options as the fields of one dataclass (annotated
    for typer as parameters would be): typer sees the fields as the command's parameters, and
    the command receives them as one `arguments` object."""
    hints = get_type_hints(arguments, include_extras=True)
    params = [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
            default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
        )
        for f in dataclasses.fields(arguments)  # type: ignore[arg-type]
    ]

    def decorate(command: Callable[[A], R]) -> Callable[..., R]:
        def from_options(**values: Any) -> R:
            return command(arguments(**values))

        functools.update_wrapper(from_options, command, updated=())
        del from_options.__wrapped__  # typer must read the signature below, not command's
        from_options.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        from_options.__annotations__ = {p.name: p.annotation for p in params}
        return from_options

    return decorate


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
