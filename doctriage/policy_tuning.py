"""Re-tuning a model version's exit thresholds from live data (`doctriage thresholds tune`):
the audit sample's stored answers (every exit's label and confidence on each sampled page's full
row) replayed under the ucb search that chooses thresholds offline (classifier.thresholds
`ucb_search`: one search for both), the cheapest thresholds whose upper bound on early-vs-full
disagreement holds the budget. `apply` stores the proposal as the model version's newest policy
(db/policies.py), which running workers poll (classifier.predict.ClassifyRuntime)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from classifier.calibrate import stage_cost_layers
from classifier.model import EarlyExitModel
from classifier.policy import MaxSoftmax, checked_policy, policy_version
from classifier.thresholds import (
    DEFAULT_DELTA,
    NEVER,
    ExitAnswers,
    ThresholdRule,
    min_pages,
    replay,
    ucb_search,
    upper_bound,
)
from db.audit import AuditFilter
from db.audit_loss import DEFAULT_BUDGET, AuditAnswers, LossEstimate, audit_answers
from db.policies import NewPolicy, add_policy, latest_policy

TUNER = "doctriage thresholds tune"


class TuneRefused(Exception):
    """The sample cannot decide (too small, or no configuration holds the budget): one line,
    nothing proposed."""


@dataclass(frozen=True)
class TuneOptions:
    """budget: a share of pages (None: the policy in force's, else the bundle's, else 0.005);
    delta: the bound's (None: as budget, else 0.1); since: audit pages from then on."""

    budget: float | None = None
    delta: float | None = None
    since: datetime | None = None
    apply: bool = False
    created_by: str = TUNER
    notes: str | None = None


@dataclass(frozen=True)
class ActivePolicy:
    spec: dict[str, Any]
    version: str
    source: str  # "store" (policy id N) or "bundle"
    record: dict[str, Any]  # the record that chose it (budget, delta), {} when unknown


def active_policy(s: Any, model: EarlyExitModel) -> ActivePolicy:
    """The policy a worker of this model version decides with: the store's newest, else the
    bundle's (exits.json)."""
    stored = latest_policy(s, str(model.version))
    if stored is not None:
        return ActivePolicy(stored.spec, stored.policy_version, f"store (policy {stored.id})",
                            dict(stored.record or {}))
    calibration = dict(getattr(model, "metadata", {}).get("calibration") or {})
    record = dict(calibration.get("threshold_selection") or {})
    if isinstance(calibration.get("budget"), int | float):
        record["budget"] = float(calibration["budget"])
    return ActivePolicy(dict(model.policy_spec), policy_version(str(model.version),
                                                                model.policy_spec),
                        "bundle", record)


def exit_answers_of(rows: list[AuditAnswers], model: EarlyExitModel) -> ExitAnswers:
    """The sample as arrays: label names to indices (names the bundle does not know get their
    own), confidences as float32 (they were float32 when the runtime compared them)."""
    names = {name: i for i, name in enumerate(model.label_names)}

    def index(name: str) -> int:
        return names.setdefault(name, len(names))

    conf = np.array([[float(c) for _, c in r.exit_answers] for r in rows], dtype=np.float32)
    labels = np.array([[index(str(lab)) for lab, _ in r.exit_answers] for r in rows],
                      dtype=np.int64)
    full = np.array([index(r.full_label) for r in rows], dtype=np.int64)
    s = model.num_stages
    return ExitAnswers(conf.reshape(len(rows), s), labels.reshape(len(rows), s), full)


def replayable_thresholds(spec: dict[str, Any], num_stages: int) -> list[float] | None:
    """Per-exit max-softmax thresholds equivalent to `spec` (None: a policy the stored answers
    cannot replay, such as entropy or patience, which need every class's probability)."""
    if spec.get("name") == "full_depth":
        return [NEVER] * (num_stages - 1) + [0.0]
    if spec.get("name") == "max_softmax":
        policy = checked_policy(spec, num_stages)
        assert isinstance(policy, MaxSoftmax)
        return [float(t) for t in policy.thresholds]
    return None


@dataclass(frozen=True)
class Costs:
    layers: np.ndarray  # encoder layers run when leaving at each stage
    flops: np.ndarray  # FLOPs relative to full depth when leaving at each stage


def figures(answers: ExitAnswers, thresholds: list[float] | None, costs: Costs,
            delta: float) -> dict[str, Any]:
    """A policy replayed on the sample: the estimated loss with its 95% Wilson interval (as
    `audit loss` gives it), the ucb search's bound, and the compute (mean layers and exit stage,
    FLOPs ratio; full depth is served as one plain pass: ratio 1)."""
    if thresholds is None:
        return {"replayed": False}
    run = replay(answers, thresholds, costs.flops)
    n = answers.pages
    full_depth = all(t >= NEVER for t in thresholds[:-1])
    return {
        "replayed": True,
        "thresholds": thresholds,
        "loss": LossEstimate.of(n, run.disagreements).as_dict(),
        "disagreement_ucb": upper_bound(run.disagreements, n, delta),
        "mean_layers": float(costs.layers[run.exit_stage].mean()) if n else 0.0,
        "mean_exit_stage": float(run.exit_stage.mean()) if n else 0.0,
        "flops_ratio": 1.0 if full_depth else run.mean_cost,
        "exit_counts": np.bincount(run.exit_stage, minlength=len(costs.layers)).tolist(),
    }


def rule_for(opts: TuneOptions, active: ActivePolicy) -> ThresholdRule:
    """The budget and delta: given, else those the policy in force was chosen under."""
    budget = opts.budget if opts.budget is not None else active.record.get("budget")
    delta = opts.delta if opts.delta is not None else active.record.get("delta")
    return ThresholdRule(float(budget) if isinstance(budget, int | float) else DEFAULT_BUDGET,
                         "ucb",
                         float(delta) if isinstance(delta, int | float) else DEFAULT_DELTA)


def tune(sessions: Any, model: EarlyExitModel, opts: TuneOptions) -> dict[str, Any]:
    """Propose (and with `opts.apply` store) the cheapest thresholds the audit sample says hold
    the budget; the report has the before/after figures. Raises TuneRefused."""
    from db.session import session_scope

    version = str(model.version)
    with session_scope(sessions) as s:
        active = active_policy(s, model)
        rows = [r for r in audit_answers(s, AuditFilter(since=opts.since, model_version=version))
                if len(r.exit_answers) == model.num_stages]
    rule = rule_for(opts, active)
    report = decide(rows, model, active, rule)
    report["options"] = {"since": opts.since.isoformat() if opts.since else None,
                         "apply": opts.apply}
    if opts.apply:
        report["applied"] = store_proposal(sessions, model, report, opts)
    return report


def decide(rows: list[AuditAnswers], model: EarlyExitModel, active: ActivePolicy,
           rule: ThresholdRule) -> dict[str, Any]:
    """The search on the sample, refused when the sample cannot decide."""
    n, need = len(rows), min_pages(rule.budget, rule.delta)
    where = f"model version {model.version}"
    if need is None:
        raise TuneRefused(f"a budget of {rule.budget:.2%} leaves no room for early exit")
    if n < need:
        raise TuneRefused(
            f"too few audit-sampled pages to decide: {n} for {where}, and even with no "
            f"disagreement the bound needs {need} at budget {rule.budget:.2%}, delta "
            f"{rule.delta:g}")
    answers = exit_answers_of(rows, model)
    costs = Costs(np.asarray(model.exit_layers, dtype=np.float64),
                  np.asarray(stage_cost_layers(model), dtype=np.float64))
    found = ucb_search(answers, costs.flops, rule)
    if found.passed == 0:
        raise TuneRefused(
            f"nothing passes: on {n} audit-sampled pages of {where} even the strictest "
            f"threshold's bound on disagreement is above the budget {rule.budget:.2%}; "
            "no policy proposed")
    proposed = MaxSoftmax(model.num_stages, found.thresholds).to_json()
    observed = sum(r.early_label != r.full_label for r in rows)
    return {
        "model_version": str(model.version),
        "pages": n,
        "budget": rule.budget,
        "delta": rule.delta,
        "min_pages": need,
        "path": {"passed": found.passed, "first_failed_threshold": found.first_failed},
        "current": {"policy_version": active.version, "source": active.source,
                    "policy": active.spec, "observed": LossEstimate.of(n, observed).as_dict(),
                    **figures(answers, replayable_thresholds(active.spec, model.num_stages),
                              costs, rule.delta)},
        "proposed": {"policy_version": policy_version(str(model.version), proposed),
                     "policy": proposed,
                     **figures(answers, found.thresholds, costs, rule.delta)},
    }


def store_proposal(sessions: Any, model: EarlyExitModel, report: dict[str, Any],
                   opts: TuneOptions) -> dict[str, Any]:
    """Store the proposal as the model version's newest policy, unless it is already the one
    in force (the same policy version): then nothing is written."""
    from db.session import session_scope

    proposed = report["proposed"]
    if proposed["policy_version"] == report["current"]["policy_version"]:
        return {"stored": False, "reason": "already in force"}
    record = {"budget": report["budget"], "delta": report["delta"], "pages": report["pages"],
              "selection": "ucb", "source": "audit sample",
              "loss_before": report["current"].get("loss"), "loss_after": proposed["loss"],
              "replaced": report["current"]["policy_version"]}
    with session_scope(sessions) as s:
        policy_id = add_policy(s, NewPolicy(
            model_version=str(model.version), policy_version=proposed["policy_version"],
            spec=proposed["policy"], created_by=opts.created_by, notes=opts.notes,
            record=record))
    return {"stored": True, "policy_id": policy_id}
