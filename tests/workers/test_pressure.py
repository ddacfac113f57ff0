"""Load-adaptive exits, fast: the pressure gauge (depth over a bound, a declared backlog, read at
most once a period), the runtime's switch to the pressure policy and back (each answer names the
policy that decided it, `+pressure` under pressure), a stored policy taken up under pressure
only once it ends, the full-depth queue asked last, and which pressure policy a bundle gives."""

from __future__ import annotations

from typing import Any

import pytest
from modelkit import scribbled_contents

from classifier.bundle import load_bundle
from classifier.policy import MaxSoftmax, NeverExit, is_pressure_version, policy_version
from classifier.predict import BatcherOptions, ClassifyRuntime, PressureMode
from doctriage.pressure_policy import choose_pressure_spec, pressure_mode
from workers.celery_app import FULL_DEPTH, FullDepthLast
from workers.pressure import BrokerFlag, Declared, PressureGauge


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Depth:
    """A queue depth a test sets, counting the reads."""

    def __init__(self, value: int | None = 0) -> None:
        self.value = value
        self.reads = 0

    def __call__(self) -> int | None:
        self.reads += 1
        return self.value


def test_gauge_is_on_above_the_bound_and_reads_at_most_once_a_period() -> None:
    depth, clock = Depth(8), Clock()
    gauge = PressureGauge(depth, bound=8, every_s=1.0, clock=clock)
    assert gauge() is False  # at the bound: not above it
    depth.value = 9
    clock.now = 0.5
    assert gauge() is False and depth.reads == 1  # cached until the period passes
    clock.now = 1.0
    assert gauge() is True and depth.reads == 2
    depth.value = None  # unreadable: the normal policy is the safe side
    clock.now = 2.0
    assert gauge() is False


def test_a_declared_backlog_is_pressure_whatever_the_depth() -> None:
    declared, clock = Declared(), Clock()
    gauge = PressureGauge(Depth(0), bound=8, every_s=0.0, declared=declared, clock=clock)
    assert gauge() is False
    declared.on()
    assert gauge() is True
    declared.off()
    assert gauge() is False


def test_a_failing_declared_reader_leaves_the_depth_to_decide() -> None:
    def broken() -> bool:
        raise ConnectionError("broker down")

    depth = Depth(20)
    assert PressureGauge(depth, bound=8, every_s=0.0, declared=broken)() is True
    depth.value = 0
    assert PressureGauge(depth, bound=8, every_s=0.0, declared=broken)() is False


class Keys:
    """The two Redis commands BrokerFlag uses, recorded (the real-Redis test runs the rest)."""

    def __init__(self) -> None:
        self.sets: list[tuple[str, int]] = []

    def set(self, key: str, value: str, px: int) -> None:
        self.sets.append((key, px))

    def exists(self, key: str) -> int:
        return int(bool(self.sets))


def test_broker_flag_declares_again_only_after_a_quarter_of_its_ttl() -> None:
    keys, clock = Keys(), Clock()
    flag = BrokerFlag(lambda: keys, ttl_s=120.0, clock=clock)
    assert flag() is False
    flag.keep_declared()
    clock.now = 29.0
    flag.keep_declared()
    assert keys.sets == [(flag.key, 120_000)] and flag() is True
    clock.now = 30.0
    flag.keep_declared()
    assert len(keys.sets) == 2


def test_full_depth_is_asked_last_whatever_the_rotation() -> None:
    cycle = FullDepthLast()
    cycle.update([FULL_DEPTH, "classify", "ingest"])
    for used in ("classify", "ingest", FULL_DEPTH, "classify"):
        order = cycle.consume(3)
        assert order[-1] == FULL_DEPTH and set(order) == {FULL_DEPTH, "classify", "ingest"}
        cycle.rotate(used)


@pytest.fixture(scope="module")
def model(tiny_bundle: Any) -> Any:
    return load_bundle(tiny_bundle)


def test_runtime_switches_to_the_pressure_policy_and_back(model: Any) -> None:
    declared = Declared()
    exit_first = MaxSoftmax.global_threshold(model.num_stages, 0.0)  # every page at stage 0
    version = policy_version(model.version, exit_first.to_json(), pressure=True)
    runtime = ClassifyRuntime(model, BatcherOptions(max_batch=8),
                              pressure=PressureMode.of(exit_first, version, declared))
    normal = policy_version(model.version, model.policy_spec)
    pages = scribbled_contents(12, 3)
    before = runtime.classify(pages)
    assert {a.decided_by for a in before} == {normal}
    assert any(a.exit_stage > 0 for a in before)  # the tiny bundle's pages leave at every stage
    declared.on()
    under = runtime.classify(pages)
    assert {a.decided_by for a in under} == {version} and is_pressure_version(version)
    assert {a.exit_stage for a in under} == {0} and runtime.under_pressure
    assert runtime.policy_version == normal  # what the OCR-free exit's answers record
    declared.off()
    assert [a.decided_by for a in runtime.classify(pages)] == [normal] * len(pages)
    assert [a.exit_stage for a in runtime.classify(pages)] == [a.exit_stage for a in before]


def test_a_stored_policy_taken_under_pressure_decides_once_it_ends(model: Any) -> None:
    declared = Declared()
    exit_first = MaxSoftmax.global_threshold(model.num_stages, 0.0)
    pressure = PressureMode.of(exit_first, "p+pressure", declared)
    runtime = ClassifyRuntime(model, BatcherOptions(max_batch=8), pressure=pressure)
    pages = scribbled_contents(4, 5)
    declared.on()
    runtime.classify(pages)
    full = NeverExit(model.num_stages)
    runtime.use_policy(full, "tuned")  # the policy watch found a newer one
    assert {a.decided_by for a in runtime.classify(pages)} == {"p+pressure"}
    declared.off()
    after = runtime.classify(pages)
    assert {a.decided_by for a in after} == {"tuned"}
    assert {a.exit_stage for a in after} == {model.num_stages - 1}


def test_the_bundles_pressure_policy_is_used_when_fitted_within_the_budget(model: Any) -> None:
    spec = MaxSoftmax.global_threshold(model.num_stages, 0.5).to_json()
    model.pressure = {"policy": spec, "budget": 0.02}
    try:
        assert choose_pressure_spec(model, 0.02, None).spec == spec
        assert choose_pressure_spec(model, 0.05, None).spec == spec
        # A stricter setting than the bundle's fit, and no store to derive one from: none.
        stricter = choose_pressure_spec(model, 0.01, None)
        assert stricter.spec is None and "looser than 1.00%" in stricter.source
        mode = pressure_mode(model, 0.02, lambda: True)
        assert mode is not None and mode.load()[1] == policy_version(  # type: ignore[index]
            model.version, spec, pressure=True)
        assert pressure_mode(model, 0.0, lambda: True) is None  # budget 0: adaptation off
    finally:
        model.pressure = None
    older = choose_pressure_spec(model, 0.02, None)  # a bundle from before: nothing to use
    assert older.spec is None and "no pressure policy" in older.source


def test_a_pressure_policy_that_cannot_be_had_leaves_the_normal_one_deciding(model: Any) -> None:
    """A bundle without one and no store: the mode loads nothing, at the first classify under
    pressure (never while the runtime is built), and the normal policy decides on; a load that
    fails (the store down) is tried again at the next classify."""
    declared, loads = Declared(), []

    def load() -> None:
        loads.append(1)
        if len(loads) == 1:
            raise ConnectionError("store down")

    runtime = ClassifyRuntime(model, BatcherOptions(max_batch=8),
                              pressure=PressureMode(declared, load))
    normal = policy_version(model.version, model.policy_spec)
    pages = scribbled_contents(4, 2)
    runtime.classify(pages)
    assert loads == []
    declared.on()
    assert {a.decided_by for a in runtime.classify(pages)} == {normal} and len(loads) == 1
    assert {a.decided_by for a in runtime.classify(pages)} == {normal} and len(loads) == 2
    runtime.classify(pages)
    assert len(loads) == 2 and runtime.under_pressure  # loaded once: None, not read again
    lazy = pressure_mode(model, 0.02, declared)  # no bundle policy, no store: loads None
    assert lazy is not None and lazy.load() is None
