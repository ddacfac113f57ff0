"""glibc malloc settings for a process that runs the model on CPU.

Every encoder layer allocates and frees a handful of large tensors (attention scores, bias sums,
softmax temporaries: 67 MB each at batch 64 for the small model). glibc serves blocks over its
mmap threshold (at most 32 MiB) with a fresh mmap once the heap's top has no room, and the
stage batcher's parked states keep the heap fragmented, so at batch 64 every such block was a
fresh mapping: 5.1 million page faults and 19 of 49 CPU-seconds in the kernel for one pass over
768 pages (bench/batching.py), against 7 faults with these settings. The settings:

- one arena, so the batcher thread allocates from the same heap as everyone else (a thread's
  own arena is made of 64 MiB mmap'ed heaps, which never hold such blocks);
- no mmap'ed blocks: everything comes from the heap and is reused;
- keep up to 2 GiB free at the heap's top and grow it 1 GiB of address space at a time.

Call it at process start, before threads exist (a thread that already has its own arena keeps
it). Freed memory stays in the heap for the next batch, so a worker's RSS stays at its high-water
mark, which a long-running worker reaches anyway (bench/memory.py measures it with these
settings). Only glibc is touched; a process started with LD_PRELOAD (jemalloc, tcmalloc) or with
glibc's own MALLOC_*_ variables keeps what its operator chose.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
M_ARENA_MAX = -8

SETTINGS = {
    M_ARENA_MAX: 1,
    M_MMAP_MAX: 0,
    M_TRIM_THRESHOLD: 2**31 - 1,  # mallopt takes an int
    M_TOP_PAD: 1024 * 1024 * 1024,
}
_ENV_OVERRIDES = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_",
                  "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")

_done: str | None = None


def tune_malloc() -> str:
    """Apply the settings once per process; returns what was done (for the start-up log)."""
    global _done
    if _done is None:
        _done = _apply()
        log.info("malloc tuning: %s", _done)
    return _done


def _apply() -> str:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "skipped (not glibc)"
    if os.environ.get("LD_PRELOAD"):
        return "skipped (LD_PRELOAD set: another allocator chosen)"
    if any(os.environ.get(name) for name in _ENV_OVERRIDES):
        return "skipped (glibc malloc variables set in the environment)"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    for param, value in SETTINGS.items():
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
            return f"failed (mallopt({param}, {value}) refused)"
    return "applied (one arena, no mmap'ed blocks, trim threshold 2 GiB, top pad 1 GiB)"
