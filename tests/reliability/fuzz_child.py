"""A long-lived ingestion child for the fuzz tests: reads one JSON request per line from stdin
({"path": ..., "ocr_mode": ..., "ocr_timeout_s": ...}), runs pipelines.pages.iter_pages over the
file (and encodes each page as its artifact, as the ingest step does) and answers one JSON line:
pages read, the DocumentError line, or any other exception (a finding), with the case's peak RSS
(VmHWM, reset before each request) and the largest RSS of a finished child process (tesseract).
Run in its own process so a crash or hang in a decoder is observed, not suffered."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import resource
import sys
import traceback

# Memory cap: a decoder that tries to allocate gigabytes fails here instead of the machine. The
# RSS bound itself is checked by the parent on the reported VmHWM.
_CAP = int(os.environ.get("DOCTRIAGE_FUZZ_AS_BYTES", 3 * 1024**3))
resource.setrlimit(resource.RLIMIT_AS, (_CAP, _CAP))

from pipelines.artifacts import encode_page  # noqa: E402
from pipelines.pages import DocumentError, IngestOptions, iter_pages  # noqa: E402

# The artifact budget, passed as the ingest step passes it (where encode_page takes one).
_BUDGETED = "max_bytes" in inspect.signature(encode_page).parameters


def _reset_peak() -> None:
    # "5" resets VmHWM to the current RSS (Linux >= 4.0), so each case reports its own peak.
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _peak_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def handle(req: dict) -> dict:
    answer = _handle(req)
    answer["peak_rss"] = _peak_rss()
    answer["children_rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return answer


def _handle(req: dict) -> dict:
    # Any other IngestOptions field may be set by the request (budgets); unknown ones ignored.
    known = {f.name for f in dataclasses.fields(IngestOptions)} - {"ocr_mode", "dpi"}
    opts = IngestOptions(ocr_mode=req.get("ocr_mode", "text"), dpi=int(req.get("dpi", 50)),
                         **{"ocr_timeout_s": 5.0, "max_pages": 60,
                            **{k: v for k, v in req.items() if k in known}})
    budget = {"max_bytes": opts.max_artifact_bytes} if _BUDGETED else {}
    pages = 0
    _reset_peak()
    try:
        for page in iter_pages(req["path"], options=opts):
            assert len(page.words) == len(page.boxes)
            assert all(0 <= v <= 1000 for box in page.boxes for v in box)
            encode_page(page, **budget)
            pages += 1
    except DocumentError as exc:
        return {"pages": pages, "error": str(exc)}
    except Exception as exc:
        return {"pages": pages, "unexpected": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc()[-2000:]}
    return {"pages": pages, "error": None}


def main() -> None:
    for line in sys.stdin:
        print(json.dumps(handle(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
