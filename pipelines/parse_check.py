"""Parse a PDF's pages once in a forked child, watched, before the real ingest parses them.

pdfium builds every object of a page (each drawn copy of a form included) when the page loads,
before anything can be counted or refused, and nothing can stop it halfway: a 2 KB PDF whose
forms draw each other ten times, six deep, takes 1.7 GB and 3.5 s to load one page (seven
deep: ten times that). The child loads each page and counts its objects; the parent watches
the child's memory growth and time and kills it past the budget, so such a page costs at most
the budget, in a process that can be killed, and the document fails with the page named.

Growth is the larger of the child's peak RSS over its start (polled, and told by the child
before it exits) and its private memory over its start (told after each page loads): in a
worker whose tuned malloc keeps freed heap resident, pdfium writes into pages the fork shared
with the parent, which costs real memory but leaves RSS flat.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

from pipelines import pdf
from pipelines.errors import DocumentError
from pipelines.sniff import OpenedDocument

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_POLL_S = 0.003
_PR_SET_PDEATHSIG = 1
_SUPPORTED = hasattr(os, "fork") and Path("/proc/self/statm").exists()
# Looked up here, not in the child: a dlopen after a fork can deadlock on the loader's lock.
try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def check_pages(src: OpenedDocument, max_objects: int, max_parse_mb: int, max_s: float) -> None:
    """Raise DocumentError for the first page whose parse grows past `max_parse_mb` MiB or whose
    objects pass `max_objects`, or when parsing them all takes over `max_s` seconds. A document
    pdfium cannot open passes: the ingest itself reports it. Linux only (fork, /proc); elsewhere
    a no-op."""
    if not _SUPPORTED:
        return
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    with pdf.PDFIUM_LOCK:  # pdfium is consistent at the fork: no other thread is inside it
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 0
            try:
                os.close(read_fd)
                _die_with(parent)
                code = _child(src, max_objects, write_fd)
            finally:
                os._exit(code)
    os.close(write_fd)
    try:
        _watch(src, pid, read_fd, (max_objects, max_parse_mb, max_s))
    finally:
        os.close(read_fd)


def _die_with(parent: int) -> None:
    """A watcher that is killed (e.g. a worker SIGKILLed) takes the child with it: an orphan
    would go on parsing with nobody to stop it."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(0)


def _reaped(pid: int, block: bool) -> bool:
    try:
        return os.waitpid(pid, 0 if block else os.WNOHANG)[0] != 0
    except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): gone all the same
        return True


def _child(src: OpenedDocument, max_objects: int, out: int) -> int:
    me = os.getpid()
    os.write(out, f"base {_rss(me)} {_private(me)}\n".encode())
    try:
        return _parse_all(src, max_objects, out)
    finally:
        # The peak, told before exit: a parse that grows and ends between two of the
        # watcher's polls (a busy machine) is still seen.
        os.write(out, f"peak {_peak(os.getpid())}\n".encode())


def _parse_all(src: OpenedDocument, max_objects: int, out: int) -> int:
    try:
        doc = pdf.open_pdf(_own_handle(src))
    except DocumentError:
        return 0
    for number in range(1, len(doc) + 1):
        os.write(out, f"page {number}\n".encode())
        page = doc[number - 1]
        scan = pdf.scan_page(page, max_objects)
        # With the page loaded: memory it wrote into pages shared with the parent at the fork
        # (free heap a tuned malloc keeps resident) is private now, though RSS did not grow.
        os.write(out, f"mem {_private(os.getpid())}\n".encode())
        if not scan.complete:
            os.write(out, f"over {number} {scan.objects} {int(scan.nested)}\n".encode())
            return 0
        page.close()
    return 0


def _own_handle(src: OpenedDocument) -> OpenedDocument:
    """The child reads through a file description of its own: a shared one would move the
    parent's file offset under its buffered reader."""
    if isinstance(src.data, Path):
        return src
    inner = getattr(src.data, "_file", src.data)  # a SpooledTemporaryFile's file
    try:
        fd = inner.fileno()
    except (AttributeError, OSError, ValueError):
        return src  # in memory: the child's pages are its own copy
    return replace(src, data=open(f"/proc/self/fd/{fd}", "rb"))  # closed as the child exits


@dataclass
class _ChildReport:
    """What the parsing child said so far (its progress lines) and its peak memory."""

    page: int = 0
    peak: int = 0
    private: int = 0
    base: tuple[int, int] | None = None  # the child's (RSS, private bytes) as it started
    over: tuple[int, int, bool] | None = None  # (page, objects, nested) over the object budget

    def take(self, line: bytes) -> None:
        kind, *vals = line.decode().split()
        if kind == "base":
            self.base = (int(vals[0]), int(vals[1]))
        elif kind == "mem":
            self.private = max(self.private, int(vals[0]))
        elif kind == "page":
            self.page = int(vals[0])
        elif kind == "over":
            self.over = (int(vals[0]), int(vals[1]), vals[2] == "1")
        elif kind == "peak":
            self.peak = int(vals[0])

    def grown(self) -> int:
        """Bytes the child grew by since it started parsing (resident or private)."""
        if self.base is None:
            return 0
        return max(self.peak - self.base[0], self.private - self.base[1])


def _watch(src: OpenedDocument, pid: int, read_fd: int, budgets: tuple[int, int, float]) -> None:
    max_objects, max_parse_mb, max_s = budgets
    start, buf = time.monotonic(), b""
    report = _ChildReport()
    done = False
    try:
        while not done:
            chunk, done = _read_child(pid, read_fd)
            *lines, buf = (buf + chunk).split(b"\n")
            for line in lines:
                report.take(line)
            if not done:
                report.peak = max(report.peak, _peak(pid))
            if report.grown() > max_parse_mb << 20:
                raise DocumentError(
                    src.name,
                    f"page {report.page}: parsing it takes over {max_parse_mb} MB (the parse "
                    "budget; forms drawn many times over or a huge content stream)",
                    report.page,
                )
            if not done and time.monotonic() - start > max_s:
                raise DocumentError(
                    src.name,
                    f"ingest over {max_s:g} s while parsing page {report.page}",
                    report.page,
                )
    finally:
        if not done:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _reaped(pid, block=True)
    if report.over is not None:
        number, objects, nested = report.over
        at_least = "at least " if nested else ""
        raise DocumentError(
            src.name,
            f"page {number}: {at_least}{objects:,} page objects over the "
            f"{max_objects:,}-object budget",
            number,
        )


def _read_child(pid: int, read_fd: int) -> tuple[bytes, bool]:
    """What the child wrote since the last call, and whether it has exited (and was reaped).
    Wakes on the child's progress lines or its exit (end of the pipe), else every poll."""
    if select.select([read_fd], [], [], _POLL_S)[0]:
        chunk = os.read(read_fd, 65536)
        # An empty read: the child is gone (or going): reap it.
        return chunk, (not chunk and _reaped(pid, block=True))
    if not _reaped(pid, block=False):
        return b"", False
    buf = b""
    while chunk := os.read(read_fd, 65536):  # what it wrote last; every writer is gone
        buf += chunk
    return buf, True


def _peak(pid: int) -> int:
    """The process's peak resident set (VmHWM), bytes; a forked child's starts at its RSS."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _private(pid: int) -> int:
    """Bytes of the process's memory no other process shares (Private_Clean + Private_Dirty)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith((b"Private_Clean:", b"Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return total


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0
