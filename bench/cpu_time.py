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


def named_cpu(prefix: str) -> float:
    """Seconds of every process whose name starts with `prefix` (a server: "postgres",
    "redis"), machine-wide, so other jobs' use of the same server counts too."""
    total = 0.0
    for q in psutil.process_iter(["name"]):
        if (q.info["name"] or "").startswith(prefix):
            try:
                t = q.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                continue
    return total
