from __future__ import annotations

import random
import time
from functools import partial

import pytest
from racekit import run_at_once
from staged_fakes import FakeStagedModel, fake_decide, page_inputs

from classifier.stage_batcher import SCHEDULES, BatcherStopped, StageBatcher


def _specs(n: int, num_stages: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(pid, rng.randrange(num_stages + 1)) for pid in range(n)]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_drain_every_page_exits_once_at_its_stage(schedule: str) -> None:
    model = FakeStagedModel(num_stages=4)
    batcher = StageBatcher(model, fake_decide, max_batch=8, schedule=schedule)
    specs = _specs(203, 4)
    futures = batcher.submit(page_inputs(specs), [pid for pid, _ in specs])
    batcher.drain()
    assert batcher.pending() == [0, 0, 0, 0]
    for (pid, exit_at), fut in zip(specs, futures, strict=True):
        res = fut.result(timeout=0)
        assert res.label == str(pid)  # the page's own answer, not a neighbour's
        assert res.exit_stage == min(exit_at, 3)  # final stage always exits
        assert len(res.trail) == res.exit_stage + 1
    # each page went through each stage up to its exit exactly once
    seen: dict[int, list[int]] = {}
    for stage, ids in model.calls:
        assert len(ids) <= 8
        for pid in ids:
            seen.setdefault(pid, []).append(stage)
    assert all(seen[pid] == list(range(min(e, 3) + 1)) for pid, e in specs)
    stats = batcher.stats_dict()
    assert sum(s["pages_exited"] for s in stats) == len(specs)
    assert stats[0]["pages_in"] == len(specs)


def test_deepest_full_schedule_keeps_batches_full_with_little_parked_state() -> None:
    fills, parked = {}, {}
    for schedule in SCHEDULES:
        batcher = StageBatcher(FakeStagedModel(5), fake_decide, max_batch=16, schedule=schedule)
        specs = _specs(500, 5, seed=1)
        batcher.submit(page_inputs(specs), [p for p, _ in specs])
        batcher.drain()
        st = batcher.stats
        fills[schedule] = sum(s.pages_in for s in st) / sum(s.batches * 16 for s in st)
        parked[schedule] = batcher.peak_parked
    # only one partial batch per stage, at the tail of the backlog
    assert fills["deepest_full"] > 0.95
    assert fills["deepest_full"] == max(fills.values())
    # ... while the layer-by-layer order parks almost the whole backlog's hidden states
    assert parked["deepest_full"] < parked["shallowest"] / 4


def test_early_exit_off_runs_every_page_to_the_final_stage() -> None:
    batcher = StageBatcher(FakeStagedModel(3), fake_decide, max_batch=4, early_exit=False)
    specs = [(i, 0) for i in range(10)]
    futs = batcher.submit(page_inputs(specs), list(range(10)))
    batcher.drain()
    assert {f.result().exit_stage for f in futs} == {2}


def test_max_delay_is_honoured_for_a_partial_batch() -> None:
    batcher = StageBatcher(FakeStagedModel(2), fake_decide, max_batch=64, max_delay_ms=300).start()
    try:
        t0 = time.perf_counter()
        futs = batcher.submit(page_inputs([(1, 0), (2, 0)]), [1, 2])
        res = [f.result(timeout=10) for f in futs]
        waited = time.perf_counter() - t0
        assert waited >= 0.29  # waited for company ...
        assert waited < 5.0  # ... but not forever (a liveness bound, generous under load)
        assert [r.exit_stage for r in res] == [0, 0]
        assert batcher.batch_log == [(0, 2)]  # both in one batch
    finally:
        batcher.stop()


def test_a_full_batch_does_not_wait_for_the_delay() -> None:
    # With a one-minute delay, a full batch's answers come back within the 10-s result
    # time-out only if it was dispatched at once (no wall-time figure to flake under load).
    batcher = StageBatcher(FakeStagedModel(2), fake_decide, max_batch=64,
                           max_delay_ms=60_000).start()
    try:
        futs = batcher.submit(page_inputs([(i, 0) for i in range(64)]), list(range(64)))
        assert [f.result(timeout=10).exit_stage for f in futs] == [0] * 64
        assert batcher.batch_log == [(0, 64)]
    finally:
        batcher.stop()


def test_concurrent_callers_share_batches_and_get_their_own_pages() -> None:
    model = FakeStagedModel(4, delay_s=0.005)
    batcher = StageBatcher(model, fake_decide, max_batch=16, max_delay_ms=20).start()

    def caller(t: int) -> None:
        specs = [(t * 1000 + i, (t + i) % 5) for i in range(40)]
        futs = batcher.submit(page_inputs(specs), [p for p, _ in specs])
        for (pid, exit_at), f in zip(specs, futs, strict=True):
            r = f.result(timeout=30)
            assert r.label == str(pid)
            assert r.exit_stage == min(exit_at, 3)

    try:
        run_at_once([partial(caller, t) for t in range(6)])
    finally:
        batcher.stop()
    ids = [pid for stage, batch in model.calls if stage == 0 for pid in batch]
    assert len(ids) == len(set(ids)) == 240  # nothing lost, nothing run twice
    # pages of different callers ended up in the same batches
    callers_per_batch = [len({pid // 1000 for pid in b}) for s, b in model.calls if s == 0]
    assert max(callers_per_batch) > 1
    assert all(size <= 16 for _, size in batcher.batch_log)


def test_stop_without_finishing_hands_pending_pages_back() -> None:
    batcher = StageBatcher(FakeStagedModel(3), fake_decide, max_batch=4)
    futs = batcher.submit(page_inputs([(i, 2) for i in range(10)]), list(range(10)))
    returned = batcher.stop(finish=False)
    assert sorted(returned) == list(range(10))
    for f in futs:
        with pytest.raises(BatcherStopped):
            f.result(timeout=0)
    with pytest.raises(BatcherStopped):
        batcher.submit(page_inputs([(99, 0)]), [99])


def test_stop_with_finish_completes_pending_pages() -> None:
    batcher = StageBatcher(FakeStagedModel(3, delay_s=0.01), fake_decide, max_batch=4,
                           max_delay_ms=1000).start()
    futs = batcher.submit(page_inputs([(i, i % 3) for i in range(7)]), list(range(7)))
    batcher.stop(finish=True, timeout=30)
    assert all(f.done() and f.exception() is None for f in futs)


def test_a_failing_batch_fails_its_pages_not_the_batcher() -> None:
    class Exploding(FakeStagedModel):
        def exit_logits(self, state):
            if 13 in state.x[:, 0].tolist():
                raise RuntimeError("boom")
            return super().exit_logits(state)

    batcher = StageBatcher(Exploding(2), fake_decide, max_batch=2)
    futs = batcher.submit(page_inputs([(12, 0), (13, 0), (14, 0)]), [12, 13, 14])
    batcher.drain()
    with pytest.raises(RuntimeError, match="boom"):
        futs[1].result(timeout=0)
    assert futs[2].result(timeout=0).label == "14"


def test_hooks_see_every_submission_and_batch() -> None:
    """The worker's metrics come through hooks it passes in (the batcher itself records to no
    metrics library): queue depths after each submission, and each batch with its size, the
    batch limit and the depths after it."""

    class Recorder:
        def __init__(self) -> None:
            self.depths: list[list[int]] = []
            self.batches: list[tuple[int, int, int, list[int]]] = []

        def queued(self, depths: list[int]) -> None:
            self.depths.append(depths)

        def batch_done(self, stage: int, size: int, max_batch: int, seconds: float,
                       depths: list[int]) -> None:
            assert seconds >= 0
            self.batches.append((stage, size, max_batch, depths))

    hooks = Recorder()
    batcher = StageBatcher(FakeStagedModel(3), fake_decide, max_batch=4, hooks=hooks)
    batcher.submit(page_inputs([(i, 1) for i in range(6)]), list(range(6)))
    batcher.submit(page_inputs([(9, 0)]), [9])
    assert hooks.depths == [[6, 0, 0], [7, 0, 0]]
    batcher.drain()
    # deepest_full: the four pages moved on to stage 1 make a full batch there first
    assert hooks.batches == [
        (0, 4, 4, [3, 4, 0]), (1, 4, 4, [3, 0, 0]), (0, 3, 4, [0, 2, 0]), (1, 2, 4, [0, 0, 0])]


def test_answers_are_named_with_the_given_labels_and_layers() -> None:
    """Given the model's names, each page's answer carries its label's name and the encoder
    layers run for it; without them, the label index as text and the stage."""
    layers = [0, 2, 5]
    named = StageBatcher(FakeStagedModel(3), fake_decide, max_batch=4,
                         label_names=[f"class{i}" for i in range(12)], exit_layers=layers)
    plain = StageBatcher(FakeStagedModel(3), fake_decide, max_batch=4)
    specs = [(pid, pid % 4) for pid in range(12)]
    answers = {}
    for name, batcher in (("named", named), ("plain", plain)):
        futures = batcher.submit(page_inputs(specs), [pid for pid, _ in specs])
        batcher.drain()
        answers[name] = [f.result(timeout=0) for f in futures]
    for (pid, exit_at), a, p in zip(specs, answers["named"], answers["plain"], strict=True):
        assert a.exit_stage == p.exit_stage == min(exit_at, 2)
        assert (a.label, a.exit_layer) == (f"class{pid}", layers[a.exit_stage])
        assert (p.label, p.exit_layer) == (str(pid), p.exit_stage)
