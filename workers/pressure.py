"""Backlog pressure: when classify workers trade accuracy (within the looser pressure budget,
DOCTRIAGE_PRESSURE_BUDGET) for speed. Pressure is on while the classify queue holds more than
`bound` messages, or while a backlog run declares it (the nightly backlog on Celery sets a
broker key with a time-to-live; an embedded backlog run is pressure throughout).

`PressureGauge` is what the classify runtime asks before each early classify
(classifier.predict.PressureMode.active): cheap, because the answer is cached for `every_s`, and
testable, because the depth reader, the declared-flag reader and the clock are injected. A
depth that cannot be read counts as no pressure: the normal policy is the safe side."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# The broker key a running backlog sets (with a time-to-live) to declare pressure.
DECLARED_KEY = "doctriage:pressure:declared"


@dataclass
class PressureGauge:
    """`depth()`: messages waiting in the classify queue (None: unknown); `declared()`: a
    backlog run says so. Under pressure when depth > `bound` or declared; read at most once
    per `every_s` (concurrent callers share the reading)."""

    depth: Callable[[], int | None]
    bound: int
    every_s: float = 1.0
    declared: Callable[[], bool] = lambda: False
    clock: Callable[[], float] = time.monotonic
    _value: bool = field(default=False, init=False)
    _read_at: float | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __call__(self) -> bool:
        now = self.clock()
        with self._lock:
            if self._read_at is not None and now - self._read_at < self.every_s:
                return self._value
            self._read_at = now
            self._value = self._read()
            return self._value

    def _read(self) -> bool:
        try:
            if self.declared():
                return True
        except Exception as exc:  # the broker down: depth decides (or no pressure)
            log.warning("cannot read the declared backlog pressure: %s", exc)
        depth = self.depth()
        return depth is not None and depth > self.bound


class Declared:
    """Pressure declared in process (an embedded backlog run): `on()` / `off()`."""

    def __init__(self) -> None:
        self._on = False

    def __call__(self) -> bool:
        return self._on

    def on(self) -> None:
        self._on = True

    def off(self) -> None:
        self._on = False


class BrokerFlag:
    """Pressure declared across processes through the Redis broker: `declare()` sets
    DECLARED_KEY for `ttl_s` (a backlog run calls it as it goes, so a run that dies stops
    declaring within `ttl_s`), `__call__` reads it (a worker's gauge). `client()` gives a
    redis.Redis (or anything with set/exists)."""

    def __init__(self, client: Callable[[], Any], ttl_s: float = 120.0,
                 key: str = DECLARED_KEY, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self.ttl_s = ttl_s
        self.key = key
        self._clock = clock
        self._declared_at: float | None = None

    def declare(self) -> None:
        self._client().set(self.key, "1", px=max(1, int(1000 * self.ttl_s)))
        self._declared_at = self._clock()

    def keep_declared(self) -> None:
        """Declare again when a quarter of the time-to-live has passed (call it often)."""
        if self._declared_at is None or self._clock() - self._declared_at >= self.ttl_s / 4:
            self.declare()

    def withdraw(self) -> None:
        self._client().delete(self.key)

    def __call__(self) -> bool:
        return bool(self._client().exists(self.key))
