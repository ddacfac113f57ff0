"""After training: one temperature per exit (validation NLL), ECE before/after, and per-exit
thresholds at the lowest compute whose early-vs-full disagreement holds the budget
(classifier.thresholds: an upper confidence bound by default, or the old point estimate)."""

from __future__ import annotations

import torch

from classifier.calibration import ece, fit_temperature
from classifier.model import EarlyExitModel
from classifier.policy import NeverExit, policy_from_json
from classifier.risk_bounds import clopper_pearson_upper
from classifier.thresholds import (
    DEFAULT_RULE,
    ThresholdRule,
    select_thresholds,
    simulate,
    ucb_path,
)


def stage_cost_layers(model: EarlyExitModel) -> list[float]:
    """Cost of leaving at each stage for the threshold search, in FLOPs relative to full depth."""
    full = model.full_flops()
    return [f / full for f in model.stage_flops()]


def calibrate_model(
    model: EarlyExitModel,
    logits: torch.Tensor,
    labels: torch.Tensor,
    rule: ThresholdRule = DEFAULT_RULE,
    pressure: ThresholdRule | None = None,
) -> dict:
    """`logits` (N, S, C) of every exit on validation pages. Sets the model's temperatures,
    thresholds (chosen by `rule`, see classifier.thresholds) and policy, and with `pressure`
    (the same selection at the looser backlog-pressure budget) the pressure policy; returns
    what was found (for the training report and exits.json)."""
    temps, rows = [], []
    for k in range(model.num_stages):
        t = fit_temperature(logits[:, k], labels)
        temps.append(t)
        raw = torch.softmax(logits[:, k].double(), -1)
        cal = torch.softmax(logits[:, k].double() / t, -1)
        correct = (raw.argmax(-1) == labels).numpy()
        rows.append(
            {
                "stage": k,
                "layer": model.exit_layers[k],
                "temperature": round(t, 4),
                "accuracy": float(correct.mean()) if len(labels) else 0.0,
                "ece_raw": ece(raw.max(-1).values.numpy(), correct),
                "ece_calibrated": ece(cal.max(-1).values.numpy(), correct),
            }
        )
    model.temperatures.copy_(torch.tensor(temps, dtype=torch.float32))
    probs = torch.stack(
        [model.calibrated_probs(k, logits[:, k]) for k in range(model.num_stages)], 1
    )
    choice = select_thresholds(probs, labels, stage_cost_layers(model), rule)
    thresholds, sim = choice.thresholds, choice.simulation
    model.thresholds = thresholds
    model.policy_spec = {"name": "max_softmax", "thresholds": thresholds}
    if choice.fallback:  # served as a plain full-depth pass: no intermediate head is computed
        model.policy_spec = NeverExit(model.num_stages).to_json()
    model.pressure = (fit_pressure_policy(model, probs, labels, pressure)
                      if pressure is not None else None)
    return {
        "validation_pages": len(labels),
        "exits": rows,
        "thresholds": thresholds,
        "budget": rule.budget,
        "early_exit_val_accuracy": sim.accuracy,
        "full_depth_val_accuracy": rows[-1]["accuracy"],
        "val_flops_ratio": 1.0 if choice.fallback else sim.mean_cost,
        "threshold_selection": choice.record,
        **({"pressure": model.pressure} if model.pressure else {}),
    }


def fit_pressure_policy(model: EarlyExitModel, probs: torch.Tensor, labels: torch.Tensor,
                        rule: ThresholdRule) -> dict:
    """The policy for backlog pressure: thresholds chosen as the normal ones are (`rule`'s
    selection), at the pressure budget, on the same calibrated validation probabilities (N, S,
    C); what exits.json stores under "pressure". Never dearer than the normal policy: where the
    looser budget's search found nothing cheaper, the normal policy stands."""
    costs = stage_cost_layers(model)
    choice = select_thresholds(probs, labels, costs, rule)
    spec: dict = {"name": "max_softmax", "thresholds": choice.thresholds}
    cost = 1.0 if choice.fallback else choice.simulation.mean_cost
    normal = policy_from_json(model.policy_spec, model.num_stages)
    normal_cost = (1.0 if isinstance(normal, NeverExit)
                   else simulate(normal, probs, labels, costs).mean_cost)
    if cost >= normal_cost:
        spec, cost = dict(model.policy_spec), normal_cost
    return {"policy": spec, "budget": rule.budget, "selection": choice.record,
            "val_flops_ratio": cost}


def calibrate_ocr_free(
    model: EarlyExitModel,
    logits: torch.Tensor,
    full_answers: torch.Tensor,
    labels: torch.Tensor,
    rule: ThresholdRule = DEFAULT_RULE,
) -> dict:
    """The OCR-free exit's temperature and threshold (sets `model.ocr_free`) from validation
    pages that needed OCR: `logits` (N, C) of their OCR-free pass, `full_answers` (N,) the
    full-depth answers with their OCR words, `labels` (N,) the truth. The loss is a page
    answered without OCR differently from the full-depth answer with OCR, over all N pages;
    the threshold is the loosest on the fixed path (strictest first) whose loss holds the
    budget by `rule` (ucb: its upper bound, walking the path until the first failure; point:
    the estimate). None passing: no OCR-free exit (every such page gets OCR)."""
    n = len(labels)
    if n == 0:
        model.ocr_free = None
        return {"validation_pages": 0, "note": "no validation page needed OCR: no OCR-free exit"}
    t = fit_temperature(logits, labels)
    conf, pred = torch.softmax(logits.double() / t, -1).max(-1)
    differs = pred != full_answers
    chosen, found = None, {"k": 0, "share": 0.0}
    for th in ucb_path():
        exits = conf >= th
        k = int((exits & differs).sum())
        bound = clopper_pearson_upper(k, n, rule.delta) if rule.selection == "ucb" else k / n
        if bound > rule.budget:
            if rule.selection == "ucb":
                break  # fixed-sequence testing: the first failure ends the walk
            continue
        chosen, found = th, {"k": k, "share": float(exits.double().mean())}
    model.ocr_free = None if chosen is None else {"temperature": round(t, 4),
                                                  "threshold": chosen}
    return {
        "validation_pages": n,
        "temperature": round(t, 4),
        "threshold": chosen,
        "ocr_free_accuracy": float((pred == labels).double().mean()),
        "full_depth_accuracy_with_ocr": float((full_answers == labels).double().mean()),
        "ocr_avoided_share": found["share"],
        "disagreements": found["k"],
        "disagreement_ucb": clopper_pearson_upper(found["k"], n, rule.delta),
        "selection": rule.selection,
        "budget": rule.budget,
        **({} if chosen is not None else
           {"note": "no threshold held the budget: every page that needs OCR gets it"}),
    }
