"""Calls made to race each other: each in its own thread, all released at once by a barrier (the
concurrency tests of the store: migrations, registrations, retry sweeps)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def run_at_once(calls: Sequence[Callable[[], T]], timeout_s: float = 60.0) -> list[T]:
    """Run every call at the same moment; return their results in the order they finished.
    Any call that raised fails the test (after all have been joined), with the exceptions."""
    gate = threading.Barrier(len(calls))
    results: list[T] = []
    errors: list[BaseException] = []

    def run(call: Callable[[], T]) -> None:
        try:
            gate.wait()
            results.append(call())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    assert errors == []
    return results
