"""CPU seconds of this process, of worker process trees and of servers by name: the one way the
benchmarks that count CPU (queue_overhead, celery_floor, step_costs) read it."""

from __future__ import annotations

import resource
from collections.abc import Iterable

import psutil


def self_cpu() -> float:
    """This process's user + system seconds (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


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
