"""A bundle without a pressure policy (built before it existed) gets one derived from the
store's audit sample at the pressure budget (the tuner's search at the pressure policy's 95%
bound; nothing stored), and none when the sample is too small to decide; SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from auditkit import classify_audited
from modelkit import scribbled_contents

from classifier.bundle import load_bundle
from classifier.policy import MaxSoftmax, is_pressure_version, policy_version
from classifier.predict import BatcherOptions, ClassifyRuntime
from db.policies import latest_policy
from db.session import session_scope
from doctriage.pressure_policy import choose_pressure_spec, pressure_mode


def classify(factory: Any, artifacts: Path, runtime: ClassifyRuntime,
             pages: Sequence[Any], name: str) -> None:
    classify_audited(factory, artifacts, runtime, pages, f"s3://bucket/p/{name}.pdf")


@pytest.mark.slow  # about 20 s per backend: every page through both passes
def test_pressure_policy_from_the_audit_sample_when_the_bundle_has_none(
        factory, tmp_path, tiny_bundle) -> None:
    model = load_bundle(tiny_bundle)
    assert model.pressure is None
    # A strict normal policy (the tiny bundle's own per-exit thresholds are cheaper than any
    # global threshold the search walks): the pressure budget has room to be cheaper.
    model.policy_spec = MaxSoftmax.global_threshold(model.num_stages, 0.9999).to_json()
    runtime = ClassifyRuntime(model, BatcherOptions(max_batch=8))
    # 25 pages: enough for a 90% bound at 10 points (22), not for the pressure policy's 95% (29)
    classify(factory, tmp_path / "a", runtime, scribbled_contents(25, 0), "few")
    few = choose_pressure_spec(model, 0.1, lambda: factory)
    assert few.spec is None and "too few audit-sampled pages" in few.source
    assert "delta 0.05" in few.source
    lazy = pressure_mode(model, 0.1, lambda: True, lambda: factory)
    assert lazy is not None and lazy.load() is None

    classify(factory, tmp_path / "a", runtime, scribbled_contents(70, 1), "many")
    derived = choose_pressure_spec(model, 0.1, lambda: factory)
    assert derived.spec is not None and derived.source.startswith("audit sample (95 pages)")
    mode = pressure_mode(model, 0.1, lambda: True, lambda: factory)
    loaded = mode.load() if mode is not None else None
    assert loaded is not None and is_pressure_version(loaded[1])
    assert loaded[1] == policy_version(str(model.version), derived.spec, pressure=True)
    assert derived.spec["thresholds"][0] < 0.9999  # cheaper than the normal policy
    with session_scope(factory) as s:  # derived for this runtime only: nothing stored
        assert latest_policy(s, str(model.version)) is None
