"""Threshold selection with a statistical guarantee (Learn-then-Test, classifier/thresholds.py):
the exact binomial bound, the guarantee on simulated pages with a known disagreement rate, the
fallback, the point-estimate option, and bundles written before the selection was recorded."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from classifier.policy import MaxSoftmax
from classifier.risk_bounds import binomial_cdf, clopper_pearson_upper
from classifier.thresholds import (
    NEVER,
    ExitAnswers,
    ThresholdRule,
    min_pages,
    replay,
    select_thresholds,
    simulate,
    ucb_path,
    ucb_search,
)


def test_zero_events_bound_is_closed_form():
    for n, delta in ((10, 0.1), (377, 0.1), (2000, 0.05)):
        assert clopper_pearson_upper(0, n, delta) == pytest.approx(1 - delta ** (1 / n), rel=1e-12)
    assert clopper_pearson_upper(5, 5, 0.1) == 1.0 and clopper_pearson_upper(0, 0, 0.1) == 1.0


@pytest.mark.parametrize(
    ("k", "n", "delta", "upper"),
    [  # upper ends of tabulated two-sided 95% Clopper-Pearson intervals (one side: 0.025)
        (0, 10, 0.025, 0.3085),
        (1, 10, 0.025, 0.4450),
        (5, 10, 0.025, 0.8129),
        (2, 20, 0.025, 0.3170),
        (10, 100, 0.025, 0.1762),
    ],
)
def test_bound_matches_tabulated_clopper_pearson(k, n, delta, upper):
    assert clopper_pearson_upper(k, n, delta) == pytest.approx(upper, abs=1e-4)


def test_bound_is_where_the_binomial_tail_equals_delta():
    for k, n in ((3, 377), (40, 1751), (1, 2)):
        p = clopper_pearson_upper(k, n, 0.1)
        assert binomial_cdf(k, n, p) == pytest.approx(0.1, abs=1e-9)
        assert k / n < p < 1
    assert binomial_cdf(2, 4, 0.5) == pytest.approx(11 / 16)
    with pytest.raises(ValueError):
        clopper_pearson_upper(1, 10, 1.5)


def sample_pages(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two exits, two classes; full depth always answers class 0 (and is right). The early
    exit's confidence c ~ U(0.5, 1) and it disagrees with probability 0.8 (1 - c), so a global
    threshold t >= 0.5 has true disagreement 0.8 (1 - t)^2."""
    conf = rng.uniform(0.5, 1.0, n)
    disagree = rng.random(n) < 0.8 * (1 - conf)
    probs = np.zeros((n, 2, 2))
    probs[:, 0, 0] = np.where(disagree, 1 - conf, conf)
    probs[:, 0, 1] = 1 - probs[:, 0, 0]
    probs[:, 1, 0] = 1.0
    return torch.tensor(probs, dtype=torch.float32), torch.zeros(n, dtype=torch.long)


def true_risk(thresholds: list[float]) -> float:
    t = thresholds[0]
    return 0.0 if t >= 1 else 0.8 * (1 - max(t, 0.5)) ** 2


def test_ucb_holds_the_budget_in_all_but_about_delta_of_trials():
    budget, delta, trials = 0.03, 0.1, 60
    costs = [0.1, 1.0]
    over = {"ucb": 0, "point": 0}
    for seed in range(trials):
        probs, labels = sample_pages(np.random.default_rng(seed), 400)
        for selection in over:
            choice = select_thresholds(probs, labels, costs, ThresholdRule(budget, selection,
                                                                                   delta))
            over[selection] += true_risk(choice.thresholds) > budget
            if selection == "ucb":  # and it does save compute here
                assert choice.simulation.mean_cost < 1.0
    assert over["ucb"] <= math.ceil(delta * trials)
    # the point estimate sits near the budget: it breaks it far more often (the test can fail)
    assert over["point"] >= 3 * max(over["ucb"], 2)


def test_nothing_passes_falls_back_to_full_depth():
    g = torch.Generator().manual_seed(0)
    n = 200
    probs = torch.softmax(torch.randn(n, 3, 4, generator=g) * 3, -1)  # exits disagree at random
    labels = torch.randint(0, 4, (n,), generator=g)
    choice = select_thresholds(probs, labels, [0.1, 0.5, 1.0], ThresholdRule(0.005))
    assert choice.thresholds == [NEVER, NEVER, 0.0]
    assert choice.fallback and "no early exit" in choice.record["note"]
    assert choice.record["path"]["passed"] == 0
    assert choice.record["validation_disagreements"] == 0
    assert (choice.simulation.exit_stage == 2).all() and choice.simulation.mean_cost == 1.0
    # 200 pages cannot show a 0.5% rate at 90% confidence even with no disagreement at all
    assert choice.record["validation_disagreement_ucb"] > 0.005


def test_record_and_point_option():
    probs, labels = sample_pages(np.random.default_rng(5), 1000)
    costs = [0.1, 1.0]
    ucb = select_thresholds(probs, labels, costs, ThresholdRule(0.03, delta=0.2))
    point = select_thresholds(probs, labels, costs, ThresholdRule(0.03, "point", 0.2))
    for choice, method in ((ucb, "ucb"), (point, "point")):
        rec = choice.record
        assert rec["selection"] == method and rec["delta"] == 0.2 and rec["budget"] == 0.03
        again = simulate(MaxSoftmax(2, choice.thresholds), probs, labels, costs)
        k = int((again.predictions != 0).sum())
        assert rec["validation_disagreements"] == k
        assert rec["validation_disagreement"] == pytest.approx(k / 1000)
        assert rec["validation_disagreement_ucb"] == pytest.approx(
            clopper_pearson_upper(k, 1000, 0.2))
    assert ucb.record["validation_disagreement_ucb"] <= 0.03
    assert point.record["validation_disagreement"] <= 0.03  # its own rule, on the estimate
    assert point.thresholds[0] <= ucb.thresholds[0]  # the point estimate is looser
    assert ucb.thresholds[0] in ucb_path()
    with pytest.raises(ValueError):
        select_thresholds(probs, labels, costs, ThresholdRule(selection="magic"))


def test_path_is_fixed_strict_to_loose():
    path = ucb_path()
    assert path == sorted(path, reverse=True) and len(set(path)) == len(path)
    assert path[0] < 1 and path[-1] == 0.0  # loosest: every page leaves at the first exit


def test_bundle_without_selection_record_loads_as_before():
    """The shipped default bundle predates the record: same thresholds, policy and decisions."""
    from classifier.bundle import load_bundle
    from classifier.predict import model_policy
    from doctriage.default_model import SHIPPED_BUNDLE

    exits = json.loads((SHIPPED_BUNDLE / "exits.json").read_text())
    assert "threshold_selection" not in exits["metadata"]["calibration"]
    model = load_bundle(SHIPPED_BUNDLE)
    assert model.thresholds == exits["thresholds"]
    assert model.policy_spec == exits["policy"]
    policy = model_policy(model)
    assert policy == MaxSoftmax(model.num_stages, exits["thresholds"])
    assert model.metadata["calibration"]["budget"] == exits["metadata"]["calibration"]["budget"]


def brute_replay(conf, labels, full, thresholds, costs):
    """Page by page: the first exit whose confidence reaches its threshold (the last always)."""
    stages, differ = [], 0
    for c, lab, f in zip(conf.tolist(), labels.tolist(), full.tolist(), strict=True):
        k = next(k for k in range(len(c)) if k == len(c) - 1 or
                 np.float32(c[k]) >= np.float32(thresholds[k]))
        stages.append(k)
        differ += lab[k] != f
    return stages, differ, sum(costs[k] for k in stages) / len(stages)


def stored_like_answers(seed: int, n: int = 300, s: int = 4):
    """Answers as the audit sample stores them: confidences (float32) and labels per exit,
    deeper exits more confident and more often agreeing with the last one."""
    rng = np.random.default_rng(seed)
    conf = np.sort(rng.uniform(0.3, 1.0, (n, s)), axis=1).astype(np.float32)
    full = rng.integers(0, 5, n)
    labels = np.where(rng.random((n, s)) < conf ** 3, full[:, None], rng.integers(0, 5, (n, s)))
    labels[:, -1] = full
    return ExitAnswers(conf, labels, full)


def test_replay_and_search_match_a_brute_force_computation():
    costs = [0.1, 0.4, 0.7, 1.0]
    for seed in range(4):
        answers = stored_like_answers(seed)
        for th in ([0.5, 0.7, 0.9, 0.0], [NEVER, 0.8, 0.6, 0.0], [0.0] * 4, [NEVER] * 3 + [0.0]):
            run = replay(answers, th, costs)
            stages, differ, cost = brute_replay(answers.confidence, answers.labels,
                                                answers.full, th, costs)
            assert run.exit_stage.tolist() == stages and run.disagreements == differ
            assert run.mean_cost == pytest.approx(cost)
        rule = ThresholdRule(0.05, "ucb", 0.1)
        found = ucb_search(answers, costs, rule)
        # brute force: walk the path strictest first, stop at the first bound over budget,
        # keep the cheapest that passed
        best, best_cost, passed = [NEVER] * 3 + [0.0], 1.0, 0
        for t in ucb_path():
            _, differ, cost = brute_replay(answers.confidence, answers.labels, answers.full,
                                           [t] * 3 + [0.0], costs)
            if clopper_pearson_upper(differ, len(answers.full), 0.1) > 0.05:
                break
            passed += 1
            if cost < best_cost - 1e-12:
                best, best_cost = [t] * 3 + [0.0], cost
        assert (found.thresholds, found.passed) == (best, passed)
        assert 0 < passed < len(ucb_path())  # the walk stopped somewhere in the middle


def test_offline_selection_is_the_shared_search_on_validation_probabilities():
    probs, labels = sample_pages(np.random.default_rng(5), 400)
    choice = select_thresholds(probs, labels, [0.1, 1.0], ThresholdRule(0.03, "ucb", 0.1))
    found = ucb_search(ExitAnswers.from_probs(probs), [0.1, 1.0], ThresholdRule(0.03, "ucb", 0.1))
    assert choice.thresholds == found.thresholds
    assert choice.record["path"] == {"passed": found.passed,
                                     "first_failed_threshold": found.first_failed}
    assert choice.record["validation_disagreements"] == found.replay.disagreements


def test_min_pages_is_where_a_clean_sample_first_passes():
    for budget, delta in ((0.005, 0.1), (0.02, 0.1), (0.03, 0.05)):
        n = min_pages(budget, delta)
        assert clopper_pearson_upper(0, n, delta) <= budget < clopper_pearson_upper(0, n - 1,
                                                                                    delta)
    assert min_pages(0.005, 0.1) == 460 and min_pages(0.0, 0.1) is None
