"""Per-process resources of a worker: the step context (engine, artifact store) and the
classify runtime (the model and its batchers).

Both are built lazily, once per process, by factories that `doctriage.wiring` installs. Lazy
and keyed on the pid, so a prefork parent never loads the model (children build their own
after fork: a CUDA context or a DB connection pool must never cross a fork), and a thread-pool
worker shares one model and one batcher between all its concurrent tasks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

# Types only: importing them loads torch, and `doctriage submit` configures Celery (and so
# imports this) to enqueue, where a bad broker must be reported in a second, not after torch.
if TYPE_CHECKING:
    from classifier.predict import ClassifyRuntime
    from workers.steps import StepContext

T = TypeVar("T")
_lock = threading.Lock()
# Installed by doctriage.wiring.configure_celery: building these needs the settings, and workers
# never import doctriage (`doctriage -> workers`), so the wiring hands its factories down.
_context_factory: Callable[[], StepContext] | None = None
_runtime_factory: Callable[[], ClassifyRuntime] | None = None
_context: tuple[int, StepContext] | None = None
_runtime: tuple[int, ClassifyRuntime] | None = None


class NotConfigured(RuntimeError):
    """No factories installed: start workers through `doctriage worker` (or -A doctriage.wiring)."""


def install(context_factory: Callable[[], StepContext],
            runtime_factory: Callable[[], ClassifyRuntime]) -> None:
    global _context_factory, _runtime_factory
    with _lock:
        _context_factory, _runtime_factory = context_factory, runtime_factory


def reset() -> None:
    """Forget this process's resources (called in a freshly forked child)."""
    global _context, _runtime
    with _lock:
        _context = _runtime = None


def _this_process(built: tuple[int, T] | None, factory: Callable[[], T] | None,
                  start: Callable[[T], T] = lambda made: made) -> tuple[int, T]:
    """`built` if this process made it; else a fresh one from `factory`, started (a forked
    child must not use its parent's)."""
    if built is not None and built[0] == os.getpid():
        return built
    if factory is None:
        raise NotConfigured("worker resources are not configured")
    return os.getpid(), start(factory())


def step_context() -> StepContext:
    global _context
    with _lock:
        _context = _this_process(_context, _context_factory)
        return _context[1]


def classify_runtime() -> ClassifyRuntime:
    """The process's model, loaded on first use, with its batcher threads running."""
    global _runtime
    with _lock:
        _runtime = _this_process(_runtime, _runtime_factory, lambda runtime: runtime.start())
        return _runtime[1]


def loaded_runtime() -> ClassifyRuntime | None:
    with _lock:
        return _runtime[1] if _runtime is not None and _runtime[0] == os.getpid() else None
