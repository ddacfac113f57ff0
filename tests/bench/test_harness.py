"""The bench harness and stack sampler in-process: the result writer's conditions, model
resolution, and the sampler's attribution of time to the innermost matching part."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench import harness
from bench.sampler import PartSampler

ROOT = Path(__file__).resolve().parents[2]


def test_write_result_adds_the_conditions_and_echoes(tmp_path: Path, capsys) -> None:
    ap = harness.parser("Doc line.\n\nMore.", "demo", harness.Common(device=True, seed=3))
    args = ap.parse_args(["--json", str(tmp_path / "r.json"), "--threads", "1"])
    assert (args.out, args.device, args.seed, args.threads) == (tmp_path / "r.json", "cpu", 3, 1)
    assert ap.parse_args([]).out == harness.RESULTS / "demo.json"
    run = harness.start(args, malloc=False)
    harness.write_result({"figure": 1}, args.out, run)
    written = json.loads(args.out.read_text())
    assert json.loads(capsys.readouterr().out) == written
    c = written["conditions"]
    assert written["figure"] == 1 and c["torch_threads"] == 1 and c["malloc"] == "glibc defaults"
    assert len(c["loadavg_before"]) == len(c["loadavg_after"]) == 3
    assert c["cores"] >= 1 and c["date"].endswith("Z") and c["seconds"] >= 0
    assert c["git_commit"] is None or len(c["git_commit"]) == 40


def test_resolve_model_wants_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(harness.BadInput, match="not a model bundle"):
        harness.resolve_model(tmp_path)
    (tmp_path / "exits.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert harness.resolve_model(tmp_path) == tmp_path


def test_bench_scripts_run_as_modules_with_no_path_edits() -> None:
    for path in (ROOT / "bench").glob("*.py"):
        assert "sys.path.insert" not in path.read_text(), path.name


def _inner() -> None:
    time.sleep(0.3)


def _outer() -> None:
    _inner()
    time.sleep(0.2)


def test_sampler_gives_time_to_the_innermost_matching_part() -> None:
    with PartSampler({"outer": [_outer], "inner": [_inner]}, interval_s=0.002) as s:
        _outer()
        time.sleep(0.1)  # in no part
    # Sleeps only run longer on a loaded machine: lower bounds are the check, the upper ones
    # are loose.
    assert 0.2 <= s.seconds["inner"] < 1.5, dict(s.seconds)
    assert 0.1 <= s.seconds["outer"] < 1.5, dict(s.seconds)
    assert s.samples > 50


def test_sampler_matches_code_under_a_folder(tmp_path: Path) -> None:
    import json as json_module

    folder = Path(json_module.__file__).parent
    big = {str(i): list(range(50)) for i in range(3000)}
    with PartSampler({"json": [folder]}, interval_s=0.001) as s:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.3:
            json_module.dumps(big, indent=1)  # pure-Python encoder with indent
    assert s.seconds["json"] > 0.1, dict(s.seconds)
