"""CPU seconds of this process (and its finished children), of worker process trees and of
servers by name: the one way the benchmarks that count CPU (pipeline, batching, queue_overhead,
celery_floor, step_costs) read it."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterable
from types import TracebackType

import psutil


def self_cpu() -> float:
    """This process's user + system seconds (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu() -> float:
    """User + system seconds of this process's finished (waited-for) children, e.g. tesseract."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuClock:
    """Wall seconds, this process's CPU seconds, its finished children's and its minor page
    faults over a `with` block. CPU time is the steadier figure on a machine shared with other
    jobs: their load stretches our wall time, much less our CPU time."""

    wall_s = self_s = children_s = 0.0
    minor_faults = 0

    def __enter__(self) -> CpuClock:
        self._start = (time.perf_counter(), self_cpu(), children_cpu(), _minflt())
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        w0, s0, c0, f0 = self._start
        self.wall_s = time.perf_counter() - w0
        self.self_s = self_cpu() - s0
        self.children_s = children_cpu() - c0
        self.minor_faults = _minflt() - f0

    def cpu_s(self) -> dict[str, float]:
        """{"self": s, "children": s}, rounded for a report."""
        return {"self": round(self.self_s, 2), "children": round(self.children_s, 2)}


def _minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def tree_cpu(pids: Iterable[int]) -> float:
    """Seconds of these processes and their (prefork) children so far, reaped children
    included; a process that has gone counts nothing."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for q in [root, *root.children(recursive=True)]:
                t = q.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            continue
    return total


def servers_cpu(prefixes: Iterable[str]) -> dict[tuple[int, str], float]:
    """Seconds of every process whose name starts with one of `prefixes` (servers:
    "postgres", "redis"), by (pid, prefix), machine-wide, so other jobs' use of the same
    servers counts too."""
    kinds = tuple(prefixes)
    out: dict[tuple[int, str], float] = {}
    for q in psutil.process_iter(["name"]):
        name = q.info["name"] or ""
        kind = next((k for k in kinds if name.startswith(k)), None)
        if kind is None:
            continue
        try:
            t = q.cpu_times()
        except psutil.NoSuchProcess:
            continue
        out[(q.pid, kind)] = t.user + t.system
    return out


def named_cpu(prefix: str) -> float:
    """Seconds of every process whose name starts with `prefix`, summed (see servers_cpu)."""
    return sum(servers_cpu([prefix]).values())
