"""One early-exit engine: `predict_pages` and evaluation (answers and timing) drive the stage
batcher, and every page gets the answer the in-batch compaction path (the old engine, now the
baseline `classifier.baselines.predict_compacted`) gave: same label, exit stage and layer, and
the same confidence, trail and probabilities, for policies that exit pages at several stages."""

from __future__ import annotations

import pytest
import torch

from classifier.baselines import predict_compacted
from classifier.calibrate import stage_cost_layers
from classifier.evaluation import evaluate, measure_speedup
from classifier.policy import MaxSoftmax, NeverExit, Patience
from classifier.predict import predict_pages
from classifier.stage_batcher import StageBatcher
from classifier.thresholds import simulate

BATCH = 7  # 30 pages: batches at deeper stages mix pages of different stage-0 batches


def spread_policy(model, pages) -> MaxSoftmax:
    """Per-exit thresholds at the median calibrated confidence of the pages (a midpoint between
    two pages, not one page's own value): some pages leave at every exit, some run to the end."""
    with torch.inference_mode():
        logits, _ = model.all_exit_logits(model.encode(pages))
    medians = [
        float(torch.quantile(model.calibrated_probs(k, lg).max(-1).values, 0.5))
        for k, lg in enumerate(logits[:-1])
    ]
    return MaxSoftmax(model.num_stages, [*medians, 0.0])


def compacted(model, pages, **kw) -> list:
    out = []
    for start in range(0, len(pages), BATCH):
        out.extend(predict_compacted(model, model.encode(pages[start : start + BATCH]), **kw))
    return out


def log_drains(monkeypatch) -> list[tuple[bool, int, int]]:
    """Every stage-batcher drain from now on, as (early_exit, max_batch, pages waiting)."""
    drains: list[tuple[bool, int, int]] = []
    original = StageBatcher.drain

    def drain(self, *args, **kwargs):
        drains.append((self.early_exit, self.max_batch, self.pending()[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StageBatcher, "drain", drain)
    return drains


def assert_same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.label, g.exit_stage, g.exit_layer) == (w.label, w.exit_stage, w.exit_layer)
        # Equal up to float rounding: a batch of other pages may sum in another order.
        assert g.confidence == pytest.approx(w.confidence, abs=1e-6)
        assert len(g.trail) == len(w.trail) and g.trail == pytest.approx(w.trail, abs=1e-6)
        assert len(g.probs) == len(w.probs) and g.probs == pytest.approx(w.probs, abs=1e-6)


@pytest.mark.parametrize("kind", ["max_softmax", "patience"])
def test_predict_pages_gives_the_compaction_answers(model, page_factory, kind: str) -> None:
    pages, _ = page_factory(30, seed=5)
    if kind == "max_softmax":
        policy, spread = spread_policy(model, pages), model.num_stages
    else:  # looks back at earlier exits: the batcher's per-page probability history
        policy, spread = Patience(model.num_stages, 2), 3
    want = compacted(model, pages, policy=policy)
    got = predict_pages(model, pages, policy=policy, batch_size=BATCH)
    assert len({w.exit_stage for w in want}) >= spread
    assert_same(got, want)


def test_full_depth_gives_the_compaction_answers(model, page_factory) -> None:
    pages, _ = page_factory(30, seed=5)
    want = compacted(model, pages, early_exit=False)
    assert_same(predict_pages(model, pages, early_exit=False, batch_size=BATCH), want)
    # A never-exit policy is full depth too: no intermediate heads, a one-exit trail.
    never = predict_pages(model, pages, policy=NeverExit(model.num_stages), batch_size=BATCH)
    assert_same(never, want)
    assert all(len(p.trail) == 1 for p in never)


def test_speedup_is_timed_on_the_stage_batcher(model, page_factory, monkeypatch) -> None:
    """Evaluation's wall-clock speed-up drains the same pages through a full-depth and an
    early-exit stage batcher (max_batch = the batch size), alternating, after one warm-up
    batch each."""
    pages, _ = page_factory(10, seed=2)
    drains = log_drains(monkeypatch)
    timing = measure_speedup(model, model.encode(pages), spread_policy(model, pages), 4, rounds=2)
    assert timing["engine"] == "stage_batcher" and timing["max_batch"] == 4
    assert drains == [(False, 4, 4), (True, 4, 4)] + [(False, 4, 10), (True, 4, 10)] * 2
    assert timing["full_s"] > 0 and timing["early_exit_s"] > 0
    assert timing["speedup_wall"] == pytest.approx(timing["full_s"] / timing["early_exit_s"])


def test_thresholds_above_one_answer_as_full_depth(model, page_factory) -> None:
    """No page is confident enough for an exit before the last one: every answer is the
    full-depth one, having passed every exit."""
    pages, _ = page_factory(20, seed=4)
    full = predict_pages(model, pages, early_exit=False, batch_size=BATCH)
    never = predict_pages(
        model, pages, policy=MaxSoftmax.global_threshold(model.num_stages, 1.01), batch_size=BATCH
    )
    last = model.num_stages - 1
    assert [p.label for p in never] == [p.label for p in full]
    assert {p.exit_stage for p in never} == {last}
    assert {p.exit_layer for p in never} == {model.exit_layers[-1]}
    assert all(len(p.trail) == model.num_stages for p in never)
    for n, f in zip(never, full, strict=True):
        assert n.confidence == pytest.approx(f.confidence, abs=1e-6)
        assert n.trail[-1] == pytest.approx(f.confidence, abs=1e-6)


def test_evaluate_scores_the_stage_batchers_answers(model, page_factory, monkeypatch) -> None:
    """`evaluate`'s early-exit accuracy, exit counts, layers and compute are those of the answers
    one drain of the stage batcher gives, and agree with the policy replayed on every exit's
    probabilities (what the sweeps use)."""
    pages, labels = page_factory(30, seed=5)
    policy = spread_policy(model, pages)
    drains = log_drains(monkeypatch)
    report = evaluate(
        model, model.encode(pages), labels, batch_size=BATCH, timing_rounds=0, policy=policy
    )
    assert drains == [(True, BATCH, 30)]  # timing_rounds=0: the answers' drain only
    answers = predict_pages(model, pages, policy=policy, batch_size=BATCH)
    names = model.label_names
    ee = report["early_exit"]
    counts = [sum(a.exit_stage == k for a in answers) for k in range(model.num_stages)]
    assert ee["exit_counts"] == counts and sum(1 for c in counts if c) >= 3
    right = [a.label == names[int(y)] for a, y in zip(answers, labels, strict=True)]
    assert ee["accuracy"] == pytest.approx(sum(right) / len(pages))
    assert ee["mean_layers"] == pytest.approx(sum(a.exit_layer for a in answers) / len(pages))
    costs = stage_cost_layers(model)
    assert ee["flops_ratio"] == pytest.approx(sum(costs[a.exit_stage] for a in answers) / 30)
    assert ee["speedup_wall"] is None and ee["engine"] == "stage_batcher"
    with torch.inference_mode():
        logits, _ = model.all_exit_logits(model.encode(pages))
    probs = torch.stack([model.calibrated_probs(k, lg) for k, lg in enumerate(logits)], 1)
    replay = simulate(policy, probs, labels, costs)
    assert replay.exit_stage.tolist() == [a.exit_stage for a in answers]
    assert replay.accuracy == pytest.approx(ee["accuracy"])
