"""What every benchmark script shares: its arguments (--out, --threads, --device, --seed, the
model bundle), the process set-up the workers use (malloc tuning, torch threads), one-line
errors, and the result writer, which adds the conditions of the run to the JSON.

    ap = harness.parser(__doc__, "memory", harness.Common(device=True, model="option"))
    args = ap.parse_args()
    run = harness.start(args)            # malloc as the workers, torch threads, load average
    ...
    harness.write_result(result, args.out, run)   # + "conditions"; stdout and the file

CPU accounting lives in bench/cpu_time.py. Only the standard library is imported here (torch
and the project lazily), so bench/gpu_check.py keeps its short import list.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# Bundles already built on this machine, tried in order when a script's --model is not given.
KNOWN_BUNDLES = (
    Path.home() / ".doctriage/models/default",
    Path("/tmp/dhome/models/default"),
)


class BadInput(ValueError):
    """A bad argument or data folder: `main` prints one line on stderr and exits 2."""


@dataclass(frozen=True)
class Common:
    """Which of the common arguments a script takes: --out, --threads, --device, --seed (with
    this default) and the model bundle (none, a positional folder or --model)."""

    out: bool = True
    threads: bool = True
    device: bool = False
    seed: int | None = None
    model: Literal["none", "positional", "option"] = "none"


def parser(doc: str | None, name: str, common: Common = Common()) -> argparse.ArgumentParser:
    """The script's parser with the common arguments it asks for; `--out` (alias `--json`)
    defaults to bench/results/NAME.json."""
    first = (doc or name).strip().split("\n\n")[0]
    ap = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=first)
    if common.model == "positional":
        ap.add_argument("model", type=Path, help="a model bundle folder")
    elif common.model == "option":
        ap.add_argument("--model", type=Path, default=None,
                        help="a model bundle folder (default: the first of "
                             + ", ".join(str(p) for p in KNOWN_BUNDLES) + " that exists)")
    if common.out:
        ap.add_argument("--out", "--json", dest="out", type=Path,
                        default=RESULTS / f"{name}.json", help="where the JSON goes")
    if common.threads:
        ap.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; on a shared, loaded CPU 1 "
                             "is faster and steadier)")
    if common.device:
        ap.add_argument("--device", default="cpu", help="where the model runs (e.g. cuda)")
    if common.seed is not None:
        ap.add_argument("--seed", type=int, default=common.seed, help="seed of every random draw")
    return ap


def resolve_model(given: Path | None) -> Path:
    """The bundle folder to load: `given`, or the first known one that exists."""
    for cand in [given] if given else list(KNOWN_BUNDLES):
        if (cand / "exits.json").exists() and (cand / "model.safetensors").exists():
            return cand
    if given:
        raise BadInput(f"{given}: not a model bundle (no exits.json + model.safetensors)")
    raise BadInput("no trained bundle found; pass --model DIR (or build one with "
                   "`doctriage train`)")


class Run:
    """The conditions one run was measured under: when, where, how loaded, what code."""

    def __init__(self, malloc: str | None) -> None:
        self.malloc = malloc
        self.started = time.time()
        self.loadavg_before = _loadavg()

    def conditions(self) -> dict[str, Any]:
        torch = sys.modules.get("torch")
        commit, dirty = _git_state()
        return {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "host": platform.node(),
            "machine": platform.machine(),
            "cores": os.cpu_count(),
            "loadavg_before": self.loadavg_before,
            "loadavg_after": _loadavg(),
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "malloc": self.malloc,
            "git_commit": commit,
            "git_dirty": dirty,
            "command": command_line(),
            "seconds": round(time.time() - self.started, 1),
        }


def start(args: argparse.Namespace, *, malloc: bool = True) -> Run:
    """Set the process up as the workers run (workers/allocator.py: freed memory stays in the
    heap) and with the asked torch threads; returns the run's conditions so far."""
    tuned = None
    if malloc:
        from workers.allocator import tune_malloc

        tuned = tune_malloc()
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    return Run(tuned if malloc else "glibc defaults")


def write_result(result: dict[str, Any], out: Path | None, run: Run, *,
                 echo: bool = True, note: str | None = None) -> dict[str, Any]:
    """`result` + its "conditions" (and `note`: how to read it), to `out` (if any) and, with
    `echo`, to stdout."""
    if note is not None:
        result["note"] = note
    result["conditions"] = run.conditions()
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    if echo:
        print(text)
    return result


def run_main(fn: Callable[[], int | None]) -> NoReturn:
    """Run a script's `main`: BadInput is one line on stderr and exit status 2."""
    try:
        code = fn()
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code or 0)


def stop_process_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM to the process group (a worker's warm shutdown), SIGKILL past `grace_s`."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def command_line() -> str:
    """How this run was started, as a user would type it again."""
    module = sys.modules["__main__"].__spec__
    head = ["python", "-m", module.name] if module is not None else ["python", sys.argv[0]]
    return shlex.join([*head, *sys.argv[1:]])


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _git_state() -> tuple[str | None, bool | None]:
    """HEAD's commit and whether the tree had changes; (None, None) without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=REPO, capture_output=True, text=True, timeout=10,
                                check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head, bool(status.strip())
