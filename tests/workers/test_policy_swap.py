"""Exit policies taken up while serving: the stage batcher swaps its decider between batches
(never half: a batch decides under one rule, with that rule's name on its answers), and the
runtime's policy watch polls a source, takes a newer good policy, keeps the last good one when
a policy does not load or the source fails (logged), and reads once in `run`'s mode."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from modelkit import scribbled_contents
from staged_fakes import FakeStagedModel, page_inputs

from classifier.bundle import load_bundle
from classifier.live_policy import PolicyFeed
from classifier.policy import MaxSoftmax, NeverExit, policy_version
from classifier.predict import BatcherOptions, ClassifyRuntime
from classifier.stage_batcher import StageBatcher, StageDecision


def _exit_all(stage: int, logits: torch.Tensor, past: torch.Tensor | None) -> StageDecision:
    n = len(logits)
    return StageDecision(torch.ones(n), logits[:, 0].long(), torch.ones(n, dtype=torch.bool))


def test_swapping_deciders_while_pages_flow_never_mixes_two_rules() -> None:
    """Rule A exits every page at its first exit (early exit on); rule B is full depth in one
    go. Swapped continuously from another thread while a threaded batcher runs 600 pages: a
    page that left at stage 0 was decided by A, a page that ran full depth in one pass (one
    confidence, final stage) by B; a half-swapped batch would break one of the two."""
    model = FakeStagedModel(num_stages=4, delay_s=0.002)  # swaps land mid-batch
    batcher = StageBatcher(model, _exit_all, max_batch=8, max_delay_ms=1).start()
    stop = threading.Event()

    def swapper() -> None:
        flip = False
        while not stop.is_set():
            batcher.set_decider(_exit_all, early_exit=not flip, name="B" if flip else "A")
            flip = not flip
            time.sleep(0.0005)  # let the loop thread take its lock in between

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        futures = []
        for chunk in range(30):
            specs = [(chunk * 20 + i, 9) for i in range(20)]
            futures += batcher.submit(page_inputs(specs), [p for p, _ in specs])
        answers = [f.result(timeout=30) for f in futures]
    finally:
        stop.set()
        thread.join()
        batcher.stop()
    names = {a.decided_by for a in answers}
    assert names == {"A", "B"}, names  # both rules decided some pages
    for a in answers:
        if a.exit_stage == 0:
            assert a.decided_by == "A"
        else:
            assert (a.exit_stage, len(a.trail), a.decided_by) == (3, 1, "B")


@dataclass
class Stored:
    policy_version: str
    spec: dict[str, Any]


class Source:
    """A policy source a test controls: what it returns, or that it fails."""

    def __init__(self) -> None:
        self.value: Stored | None = None
        self.fail = False
        self.calls = 0

    def __call__(self, model_version: str) -> Stored | None:
        self.calls += 1
        if self.fail:
            raise ConnectionError("store down")
        return self.value


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def model(tiny_bundle):
    return load_bundle(tiny_bundle)


def stored(model: Any, spec: dict[str, Any]) -> Stored:
    return Stored(policy_version(model.version, spec), spec)


def test_runtime_polls_takes_newer_policy_and_records_its_version(model, caplog) -> None:
    source, clock = Source(), Clock()
    runtime = ClassifyRuntime(model, BatcherOptions(max_batch=8),
                              policies=PolicyFeed(source, every_s=30.0, clock=clock))
    pages = scribbled_contents(12, 3)
    bundle_version = policy_version(model.version, model.policy_spec)
    first = runtime.classify(pages)
    assert {a.decided_by for a in first} == {bundle_version} and source.calls == 1
    full_depth = NeverExit(model.num_stages).to_json()
    source.value = stored(model, full_depth)
    clock.now = 29.0
    runtime.classify(pages)
    assert source.calls == 1  # not due yet
    clock.now = 30.0
    with caplog.at_level(logging.INFO, logger="classifier.live_policy"):
        after = runtime.classify(pages)
    assert source.calls == 2 and runtime.policy_version == source.value.policy_version
    assert {a.decided_by for a in after} == {source.value.policy_version}
    assert all(a.exit_stage == model.num_stages - 1 for a in after)  # full depth now
    assert runtime.early.early_exit is False  # served as one plain pass
    assert f"exit policy {source.value.policy_version} in force" in caplog.text
    # the full pass records the policy in force too, and is unchanged by the swap
    assert all(a.decided_by is None for a in runtime.classify(pages, early_exit=False))


def test_a_policy_that_does_not_load_leaves_the_last_good_one(model, caplog) -> None:
    source, clock = Source(), Clock()
    runtime = ClassifyRuntime(model, policies=PolicyFeed(source, every_s=1.0, clock=clock))
    good = MaxSoftmax.global_threshold(model.num_stages, 0.5).to_json()
    source.value = stored(model, good)
    assert runtime.refresh_policy() and runtime.policy_version == source.value.policy_version
    bad_specs = [
        {"name": "max_softmax", "thresholds": [0.5, 0.5]},  # wrong number of exits
        {"name": "warp_drive"},
        {"name": "max_softmax", "thresholds": ["x"] * model.num_stages},
    ]
    for spec in bad_specs:
        source.value = Stored(f"bad-{spec['name']}-{len(str(spec))}", spec)
        for _ in range(2):
            clock.now += 1.0
            with caplog.at_level(logging.ERROR, logger="classifier.live_policy"):
                assert not runtime.refresh_policy()
        assert runtime.policy_version == stored(model, good).policy_version
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == len(bad_specs)  # once per bad version, not per poll
    # a row whose version does not name its spec is refused too
    source.value = Stored("tampered", MaxSoftmax.global_threshold(model.num_stages, 0.9).to_json())
    clock.now += 1.0
    assert not runtime.refresh_policy()
    # the store down: a warning, the policy kept, tried again next period
    source.fail = True
    clock.now += 1.0
    with caplog.at_level(logging.WARNING, logger="classifier.live_policy"):
        assert not runtime.refresh_policy()
    assert "store down" in caplog.text
    assert runtime.policy_version == stored(model, good).policy_version
    answers = runtime.classify(scribbled_contents(8, 4))
    assert {a.decided_by for a in answers} == {stored(model, good).policy_version}


def test_once_mode_reads_the_store_only_at_the_first_classify(model) -> None:
    source = Source()
    source.value = stored(model, NeverExit(model.num_stages).to_json())
    runtime = ClassifyRuntime(model, policies=PolicyFeed(source, every_s=None))
    assert source.calls == 0  # nothing read while building (a worker builds it under a lock)
    pages = scribbled_contents(4, 5)
    runtime.classify(pages)
    source.value = stored(model, MaxSoftmax.global_threshold(model.num_stages, 0.0).to_json())
    runtime.classify(pages)
    assert source.calls == 1
    assert runtime.policy_version == policy_version(model.version,
                                                    NeverExit(model.num_stages).to_json())
