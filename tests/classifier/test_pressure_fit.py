"""The pressure policy fitted at bundle build time: the normal thresholds' search at the looser
pressure budget, on the same validation probabilities; cheaper where the looser budget allows,
never dearer than the normal policy, and kept by the bundle (exits.json "pressure")."""

from __future__ import annotations

import json

import torch

from classifier.bundle import load_bundle, save_bundle
from classifier.calibrate import fit_pressure_policy, stage_cost_layers
from classifier.policy import MaxSoftmax
from classifier.thresholds import ThresholdRule, select_thresholds, simulate


def _probs(num_stages: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1000 validation pages whose full-depth answer is class 0. At the first exit: 890 say 0
    at 0.995, 10 say 1 at 0.97 (they differ from full depth), 100 say 0 at 0.6; the middle
    exits say 0 at 0.55. Exiting below 0.97 costs 1% disagreement: over the normal budget
    (0.5 points), inside the pressure one (2 points)."""
    n = 1000

    def dist(label: int, conf: float) -> torch.Tensor:
        row = torch.full((classes,), (1 - conf) / (classes - 1))
        row[label] = conf
        return row

    first = [dist(0, 0.995)] * 890 + [dist(1, 0.97)] * 10 + [dist(0, 0.6)] * 100
    probs = torch.stack([torch.stack(first)]
                        + [dist(0, 0.55).expand(n, classes)] * (num_stages - 2)
                        + [dist(0, 0.9).expand(n, classes)], 1)
    return probs, torch.zeros(n, dtype=torch.long)


def test_pressure_policy_is_cheaper_within_its_budget_and_kept_by_the_bundle(
        make_model, tmp_path) -> None:
    model = make_model()
    probs, labels = _probs(model.num_stages, len(model.label_names))
    costs = stage_cost_layers(model)
    normal = select_thresholds(probs, labels, costs, ThresholdRule(0.005))
    assert not normal.fallback
    model.policy_spec = {"name": "max_softmax", "thresholds": normal.thresholds}

    fitted = fit_pressure_policy(model, probs, labels, ThresholdRule(0.02))
    assert fitted["budget"] == 0.02 and fitted["policy"]["name"] == "max_softmax"
    pressure = MaxSoftmax(model.num_stages, fitted["policy"]["thresholds"])
    run = simulate(pressure, probs, labels, costs)
    assert fitted["val_flops_ratio"] == run.mean_cost < normal.simulation.mean_cost
    assert (run.predictions != 0).mean() <= 0.02  # its disagreement on validation: 1%
    assert fitted["selection"]["validation_disagreement_ucb"] <= 0.02

    # A "pressure" budget stricter than the normal one finds nothing cheaper: the normal stands.
    strict = fit_pressure_policy(model, probs, labels, ThresholdRule(0.001))
    assert strict["policy"] == model.policy_spec

    model.pressure = fitted
    save_bundle(model, tmp_path / "bundle")
    assert json.loads((tmp_path / "bundle" / "exits.json").read_text())["pressure"] == fitted
    assert load_bundle(tmp_path / "bundle").pressure == fitted
