"""Does any mutated real document crash, hang or blow up an ingest process?

    nice -n 19 python -m bench.fuzz_ingest --cases 5000 [--seed 0] [--workers 2]
        [--ocr-share 0.02] [--hang-s 60] [--rss-bound-mb 1024] [--max-seconds 3600]

Cases are realdocs PDFs, PNGs, JPEGs and TIFFs, and realdocs page rasters re-encoded as
standalone PNG/JPEG/TIFF (multi-frame TIFFs included), mutated (byte flips, truncations,
splices, zeroed and repeated ranges, PDF numbers such as /Length /Count /Width set to extremes,
image headers declaring huge dimensions, TIFF page chains repeated into many frames): case i is
drawn from (seed, i) alone (tests/reliability/fuzzkit.py). Each goes through
pipelines.pages.iter_pages (+ the page artifact encoding) in one of `--workers` long-lived child
processes (tests/reliability/fuzz_child.py) with the shipped options except OCR, which is on
for `--ocr-share` of the cases (text layer only otherwise). A case is a finding when the child
crashes, answers nothing within --hang-s, raises anything but DocumentError, gives a multi-line
error, or its peak RSS (VmHWM, reset per case) exceeds --rss-bound-mb; every finding is kept as
a regression fixture in tests/reliability/fuzz_regressions/ (replayed by the default suite).

Prints JSON and writes bench/results/fuzz_ingest.json. Exit 1 when there was a finding.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import platform
import sys
import time
from dataclasses import dataclass
from types import ModuleType

from bench import harness


def load_fuzzkit() -> ModuleType:
    """tests/reliability/fuzzkit.py, the fuzzing engine this script shares with the default
    suite's fuzz test (tests/ folders are not packages: it is loaded from its file)."""
    path = harness.REPO / "tests" / "reliability" / "fuzzkit.py"
    spec = importlib.util.spec_from_file_location("fuzzkit", path)
    if spec is None or spec.loader is None:
        raise harness.BadInput(f"{path}: cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzzkit"] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


fuzzkit = load_fuzzkit()


def arguments() -> argparse.ArgumentParser:
    ap = harness.parser(__doc__, "fuzz_ingest", harness.Common(threads=False, seed=0))
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--start", type=int, default=0, help="first case index (to replay a range)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ocr-share", type=float, default=0.02)
    ap.add_argument("--hang-s", type=float, default=fuzzkit.HANG_S)
    ap.add_argument("--rss-bound-mb", type=float, default=fuzzkit.RSS_BOUND / fuzzkit.MIB)
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=3600.0,
        help="stop starting new cases after this long (the run stays bounded)",
    )
    ap.add_argument("--no-fixtures", action="store_true", help="do not write findings")
    return ap


class Progress:
    """A line on stderr at most every 30 s while the cases run."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, stats: fuzzkit.RunStats) -> None:
        if time.monotonic() - self.last > 30:
            self.last = time.monotonic()
            print(
                f"{stats.cases} cases, {stats.outcomes}, findings {len(stats.findings)}",
                file=sys.stderr,
                flush=True,
            )


@dataclass(frozen=True)
class Started:
    time: float
    loadavg: list[float]


def main() -> int:
    args = arguments().parse_args()
    if not fuzzkit.realdocs_available():
        raise harness.BadInput(f"realdocs not found at {fuzzkit.REALDOCS} "
                               "(set DOCTRIAGE_REALDOCS)")
    run = harness.start(args, malloc=False)
    rss_bound = int(args.rss_bound_mb * fuzzkit.MIB)
    started = Started(time.time(), [round(x, 2) for x in os.getloadavg()])
    stats = fuzzkit.run_cases(
        range(args.start, args.start + args.cases),
        lambda i: fuzzkit.draw_recipe(args.seed, i, ocr_share=args.ocr_share),
        workers=args.workers,
        hang_s=args.hang_s,
        rss_bound=rss_bound,
        max_seconds=args.max_seconds,
        fixtures=None if args.no_fixtures else fuzzkit.REGRESSIONS,
        progress=Progress(),
    )
    result = report(args, stats, started, rss_bound)
    harness.write_result(result, args.out, run)
    return 1 if result["findings"] or stats.harness_errors else 0


def report(args: argparse.Namespace, stats: fuzzkit.RunStats, started: Started,
           rss_bound: int) -> dict:
    finding_kinds = ("crash", "hang", "exception", "multiline_error", "rss")
    return {
        "question": "do mutated real documents crash, hang or blow up an ingest process?",
        "command": harness.command_line(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other jobs",
        "loadavg_at_start": started.loadavg,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started.time)),
        "seed": args.seed,
        "first_case": args.start,
        "cases": stats.cases,
        "stopped_early": stats.stopped_early,
        "seconds": round(stats.seconds, 1),
        "cases_per_s": round(stats.cases / stats.seconds, 2) if stats.seconds else None,
        "workers": args.workers,
        "ocr_cases": stats.ocr_cases,
        "outcomes": stats.outcomes,
        "crashes": stats.outcomes.get("crash", 0),
        "hangs": stats.outcomes.get("hang", 0),
        "findings": sum(stats.outcomes.get(k, 0) for k in finding_kinds),
        "inputs_by_format": stats.formats,
        "inputs_by_base": stats.families,
        "hang_s": args.hang_s,
        "rss_bound_mib": round(rss_bound / fuzzkit.MIB),
        "peak_child_rss_mib": round(stats.peak_rss / fuzzkit.MIB, 1),
        "peak_child_rss_case": stats.peak_rss_case,
        "peak_tesseract_rss_mib": round(stats.peak_tesseract_rss / fuzzkit.MIB, 1),
        "slowest_case_s": round(stats.slowest_s, 2),
        "slowest_case": stats.slowest_case,
        "child_starts": stats.child_starts,
        "harness_errors": stats.harness_errors,
        "finding_details": [dataclasses.asdict(f) for f in stats.findings],
    }


if __name__ == "__main__":
    harness.run_main(main)
