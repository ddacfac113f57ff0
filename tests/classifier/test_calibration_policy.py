"""Temperature scaling, ECE, exit policies and the threshold search, on constructed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from classifier.calibration import ece, fit_temperature, nll, reliability_bins
from classifier.policy import (
    Entropy,
    MaxSoftmax,
    NeverExit,
    Patience,
    normalised_entropy,
    policy_from_json,
)
from classifier.thresholds import search_thresholds, simulate


def test_temperature_lowers_nll_of_overconfident_logits():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (400,), generator=g)
    logits = torch.randn(400, 4, generator=g)
    logits[torch.arange(400), labels] += 1.0  # informative but weak...
    logits *= 8.0  # ...and far too confident
    t = fit_temperature(logits, labels)
    assert t > 2.0
    assert nll(logits, labels, t) < nll(logits, labels, 1.0) - 0.5
    assert nll(logits, labels, t) <= min(nll(logits, labels, s) for s in (t * 0.8, t * 1.25))


def test_ece_by_hand():
    # bin (0.6, 0.667]: confidences 0.62, 0.64 -> mean 0.63, accuracy 0.5 -> |0.5-0.63| * 2/4
    # bin (0.933, 1]: confidences 0.95, 0.97 -> mean 0.96, accuracy 1.0 -> |1-0.96| * 2/4
    conf = np.array([0.62, 0.64, 0.95, 0.97])
    correct = np.array([1, 0, 1, 1])
    assert ece(conf, correct) == pytest.approx(0.5 * 0.13 + 0.5 * 0.04)
    bins = reliability_bins(conf, correct)
    assert [b["count"] for b in bins] == [2, 2]
    assert ece(np.array([1.0, 1.0]), np.array([1, 1])) == pytest.approx(0.0)


def trail(*stages):
    """(B=len, S, C) trail from per-stage lists of probability rows."""
    return torch.tensor(stages, dtype=torch.float32).transpose(0, 1)


def test_max_softmax_global_and_per_exit():
    t = trail([[0.9, 0.1], [0.55, 0.45]])  # two pages at stage 0
    glob = MaxSoftmax.global_threshold(3, 0.8)
    assert glob.decide(0, t).tolist() == [True, False]
    per = MaxSoftmax(3, [0.95, 0.5, 0.0])
    assert per.decide(0, t).tolist() == [False, False]
    t1 = trail([[0.9, 0.1], [0.55, 0.45]], [[0.6, 0.4], [0.52, 0.48]])
    assert per.decide(1, t1).tolist() == [True, True]
    assert per.decide(2, trail([[0.5, 0.5]], [[0.5, 0.5]], [[0.5, 0.5]])).tolist() == [True]


def test_entropy_policy():
    assert normalised_entropy(torch.tensor([[0.5, 0.5]])).item() == pytest.approx(1.0)
    pol = Entropy(3, 0.5)
    out = pol.decide(0, trail([[0.99, 0.01], [0.6, 0.4]]))
    assert out.tolist() == [True, False]
    assert -(0.99 * math.log(0.99) + 0.01 * math.log(0.01)) / math.log(2) < 0.5


def test_patience_policy():
    pol = Patience(4, patience=2)
    same = trail([[0.6, 0.4]], [[0.7, 0.3]])
    flip = trail([[0.6, 0.4]], [[0.3, 0.7]])
    assert pol.decide(0, trail([[0.99, 0.01]])).tolist() == [False]  # too short a trail
    assert pol.decide(1, same).tolist() == [True]
    assert pol.decide(1, flip).tolist() == [False]
    assert Patience(4, 2, min_confidence=0.8).decide(1, same).tolist() == [False]
    assert pol.decide(3, trail([[1, 0]], [[0, 1]], [[1, 0]], [[0, 1]])).tolist() == [True]


def test_policies_round_trip_json():
    for p in (MaxSoftmax(3, [0.9, 0.8, 0.0]), Entropy(3, 0.2), Patience(3, 2, 0.5), NeverExit(3)):
        assert policy_from_json(p.to_json(), 3) == p


def test_threshold_search_respects_the_budget():
    g = torch.Generator().manual_seed(1)
    n, s, c = 300, 4, 3
    labels = torch.randint(0, c, (n,), generator=g)
    # deeper exits are more often right; confidence correlates with being right
    probs = torch.zeros(n, s, c)
    for k in range(s):
        right = torch.rand(n, generator=g) < 0.6 + 0.12 * k
        pred = torch.where(right, labels, (labels + 1) % c)
        conf = torch.where(
            right, 0.7 + 0.3 * torch.rand(n, generator=g), 0.4 + 0.4 * torch.rand(n, generator=g)
        )
        probs[torch.arange(n), k] = ((1 - conf) / (c - 1)).unsqueeze(-1).expand(n, c)
        probs[torch.arange(n), k, pred] = conf
    costs = [0.1, 0.4, 0.7, 1.0]
    full = float((probs[:, -1].argmax(-1) == labels).double().mean())
    for budget in (0.0, 0.005, 0.05):
        th, sim = search_thresholds(probs, labels, costs, budget=budget)
        assert sim.accuracy >= full - budget - 1e-9
        again = simulate(MaxSoftmax(s, th), probs, labels, costs)
        assert again.accuracy == sim.accuracy and again.mean_cost == sim.mean_cost
    _, loose = search_thresholds(probs, labels, costs, budget=0.05)
    _, tight = search_thresholds(probs, labels, costs, budget=0.0)
    assert loose.mean_cost < tight.mean_cost <= 1.0
