"""Fault and bad-input table: runs the reliability scenarios (tests/reliability: fault injection
on real PostgreSQL/Redis/Celery workers/moto S3, bad inputs through the workflow, the fuzz run)
and prints one JSON table: fault, pages in, pages out, duplicates, time to recover.

    python -m bench.faults                 # faults + bad inputs + small fuzz
    python -m bench.faults --only faults   # just the fault-injection runs
    python -m bench.faults --slow          # also the large fuzz run (OCR on)

Each scenario asserts its own invariants (one prediction per page and pass, nothing stuck,
counts match); a row whose test failed is kept and marked `passed: false`. Writes
bench/results/faults.json. Times are wall clock on whatever machine runs it; the fault runs use
the shipped recovery settings (reconcile period, stuck bounds, visibility timeout), so
`recover_s` is what a deployment gets.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import harness

REPO = harness.REPO
SUITES = {
    "faults": (["tests/reliability/test_faults.py"], "faults"),
    "bad_input": (["tests/reliability/test_bad_input_workflow.py",
                   "tests/reliability/test_s3_bad_input_workflow.py",
                   "tests/reliability/test_worker_messages.py"], "not slow and not faults"),
    "fuzz": (["tests/reliability/test_fuzz_ingest.py"], "not faults"),
}


def run_suite(paths: list[str], marker: str, results: Path, slow: bool) -> tuple[int, str]:
    if slow and marker == "not faults":
        marker = "slow or not slow"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker,
           "-rA", *paths]
    env = {**os.environ, "DOCTRIAGE_FAULTS_RESULTS": str(results)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout[-4000:]


def main() -> int:
    ap = harness.parser(__doc__, "faults", harness.Common(threads=False))
    ap.add_argument("--only", choices=sorted(SUITES), action="append")
    ap.add_argument("--slow", action="store_true", help="include the large fuzz run")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of suites not run now from the existing --out file")
    args = ap.parse_args()
    run = harness.start(args, malloc=False)
    chosen = args.only or list(SUITES)
    rows: list[dict] = []
    suites: dict[str, dict] = {}
    started = time.time()
    for name in chosen:
        paths, marker = SUITES[name]
        with tempfile.TemporaryDirectory() as tmp:
            results = Path(tmp) / "rows.jsonl"
            t0 = time.perf_counter()
            code, tail = run_suite(paths, marker, results, args.slow)
            found = [json.loads(line) for line in results.read_text().splitlines()] \
                if results.exists() else []
        passed_lines = [ln for ln in tail.splitlines() if ln.startswith(("PASSED", "FAILED"))]
        suites[name] = {"exit_code": code, "seconds": round(time.perf_counter() - t0, 1),
                        "tests": passed_lines}
        for row in found:
            row["passed"] = code == 0
            rows.append(row)
        print(f"{name}: exit {code}, {len(found)} rows", file=sys.stderr)
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text())
        kinds = {"faults": "fault", "bad_input": "bad_input", "fuzz": "fuzz"}
        rerun = {kinds[n] for n in chosen}
        rows = [r for r in old["details"] if r.get("kind") not in rerun] + rows
        suites = {**{k: v for k, v in old["suites"].items() if k not in suites}, **suites}
        order = {"fault": 0, "bad_input": 1, "fuzz": 2}
        rows.sort(key=lambda r: order.get(r.get("kind"), 3))
    table = [{k: r.get(k) for k in ("fault", "kind", "pages_in", "pages_out", "duplicates",
                                    "recover_s", "outcome", "passed")} for r in rows]
    out = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs, shared and loaded)",
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
           "table": table, "details": rows, "suites": suites}
    harness.write_result(out, args.out, run, echo=False)
    print(json.dumps(out["table"], indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    harness.run_main(main)
