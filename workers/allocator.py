"""glibc malloc settings for a process that runs the model on CPU.

Every encoder layer allocates and frees a handful of multi-megabyte tensors (attention scores,
bias sums, softmax temporaries). With glibc's defaults the heap is trimmed and grown again, and
mid-size blocks are mmap'ed fresh, around every batch: each new page is a page fault and a
zero-fill. bench/batching.py measured the system time (mostly page faults) at 358 of 454 ms per
batch-64 stage, and these three settings roughly doubled CPU throughput of the layers (see
docs/operations.md). They keep freed memory in the heap for reuse instead of handing it back,
so a worker's RSS stays at its high-water mark, which is what a long-running worker reaches
anyway.

Only glibc is touched; a process started with LD_PRELOAD (jemalloc, tcmalloc) or with glibc's
own MALLOC_*_ variables set keeps what its operator chose.
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
M_MMAP_THRESHOLD = -3

SETTINGS = {
    # Blocks under 32 MiB (glibc's ceiling for this knob) come from the heap and are reused.
    M_MMAP_THRESHOLD: 32 * 1024 * 1024,
    # Never give the top of the heap back below 2 GiB free (mallopt takes an int).
    M_TRIM_THRESHOLD: 2**31 - 1,
    # Grow the heap in 1 GiB steps of address space (pages only count once touched).
    M_TOP_PAD: 1024 * 1024 * 1024,
}
_ENV_OVERRIDES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "GLIBC_TUNABLES")

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
    return "applied (mmap threshold 32 MiB, trim threshold 2 GiB, top pad 1 GiB)"
