"""The exit policy in force while a runtime serves: the store may hold a newer policy for the
model version than the bundle's (`doctriage thresholds tune --apply`), and a serving runtime
takes it up without a restart. Knows nothing of SQL: `PolicyFeed.source` is a callable the
wiring injects (workers/policy_source.py reads db.policies); this module polls it, checks what
comes back and hands a good policy to the runtime, which swaps its early batcher's decider
between batches (StageBatcher.set_decider). A policy that does not load leaves the runtime on
the last good one, with an error logged (once per bad version)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from classifier.policy import ExitPolicy, checked_policy, policy_version

log = logging.getLogger(__name__)


class StoredSpec(Protocol):
    """What a source returns: the stored policy's version string and its JSON."""

    policy_version: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class PolicyFeed:
    """`source(model_version)`: the newest stored policy of that version, None without one.
    `every_s`: poll at most this often, at a classify call (None: once, at the first)."""

    source: Callable[[str], StoredSpec | None]
    every_s: float | None
    clock: Callable[[], float] = field(default=time.monotonic)


class PolicyWatch:
    """Polls a feed for one model and calls `use(policy, version)` when a newer good policy
    appears. `poll()` is cheap when nothing is due; concurrent callers poll once."""

    def __init__(self, feed: PolicyFeed, model: Any, current: str,
                 use: Callable[[ExitPolicy, str], None]) -> None:
        self.feed = feed
        self.model_version = str(model.version)
        self.num_stages = int(model.num_stages)
        self.current = current
        self._use = use
        self._last: float | None = None
        self._bad: set[str] = set()
        self._lock = threading.Lock()

    def _due(self, now: float) -> bool:
        if self._last is None:
            return True
        return self.feed.every_s is not None and now - self._last >= self.feed.every_s

    def poll(self) -> bool:
        """Read the feed if due; True when the policy in force changed."""
        if not self._due(self.feed.clock()):
            return False
        with self._lock:  # one poll at a time; the others wait for its result
            now = self.feed.clock()
            if not self._due(now):
                return False
            self._last = now
            try:
                stored = self.feed.source(self.model_version)
            except Exception as exc:  # the store down: serve on, try again next period
                log.warning("cannot read the exit policy of %s (%s: %s); keeping %s",
                            self.model_version, type(exc).__name__,
                            " ".join(str(exc).split())[:300], self.current)
                return False
            if stored is None or stored.policy_version == self.current:
                return False
            return self._take(stored)

    def _take(self, stored: StoredSpec) -> bool:
        try:
            policy = checked_policy(stored.spec, self.num_stages)
            version = policy_version(self.model_version, stored.spec)
            if version != stored.policy_version:
                raise ValueError(f"its spec hashes to {version}")
        except ValueError as exc:
            if stored.policy_version not in self._bad:
                self._bad.add(stored.policy_version)
                log.error("exit policy %s does not load (%s); keeping %s",
                          stored.policy_version, exc, self.current)
            return False
        self._use(policy, version)
        log.info("exit policy %s in force (was %s)", version, self.current)
        self.current = version
        return True
