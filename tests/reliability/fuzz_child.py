"""A long-lived ingestion child for the fuzz tests: reads one JSON request per line from stdin
({"path": ..., "ocr_mode": ..., "ocr_timeout_s": ...}), runs pipelines.pages.iter_pages over the
file and answers one JSON line: pages read, the DocumentError line, or any other exception (a
finding). Run in its own process so a crash or hang in a decoder is observed, not suffered."""

from __future__ import annotations

import json
import resource
import sys
import traceback

# Memory cap: a decoder that tries to allocate gigabytes fails here instead of the machine.
_CAP = 3 * 1024**3
resource.setrlimit(resource.RLIMIT_AS, (_CAP, _CAP))

from pipelines.pages import DocumentError, IngestOptions, iter_pages  # noqa: E402


def handle(req: dict) -> dict:
    opts = IngestOptions(ocr_mode=req.get("ocr_mode", "text"), dpi=int(req.get("dpi", 50)),
                         ocr_timeout_s=float(req.get("ocr_timeout_s", 5.0)),
                         max_pages=int(req.get("max_pages", 60)))
    pages = 0
    try:
        for page in iter_pages(req["path"], options=opts):
            assert len(page.words) == len(page.boxes)
            assert all(0 <= v <= 1000 for box in page.boxes for v in box)
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
