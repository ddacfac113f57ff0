"""Which exit policy a classify runtime uses under backlog pressure, at the pressure budget
(DOCTRIAGE_PRESSURE_BUDGET):

1. the bundle's (exits.json "pressure": fitted at bundle build time on the same validation
   pages as the normal thresholds), when it was fitted at a budget no looser than the setting;
2. otherwise (a bundle built before the pressure policy existed, or a setting stricter than
   the bundle's): derived from the store's audit sample of this model version by the same ucb
   search at the setting's budget and the pressure policy's 95% bound
   (`doctriage thresholds tune`'s search, nothing stored);
3. when the sample cannot decide (too few pages, nothing passes): none. Pressure then changes
   no exit (the normal policy decides), and the full-depth queue still yields to classify.

A one-line reason is logged either way, so an operator can see which one is in force."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from classifier.policy import ExitPolicy, checked_policy, policy_version
from classifier.predict import PressureMode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PressureChoice:
    spec: dict[str, Any] | None  # None: no pressure policy
    source: str  # "bundle", "audit sample (N pages)", or why there is none


def choose_pressure_spec(model: Any, budget: float,
                         sessions: Callable[[], Any] | None) -> PressureChoice:
    """The pressure policy's spec for `model` at `budget` (see the module's note)."""
    fitted = getattr(model, "pressure", None)
    fitted_at = fitted.get("budget") if isinstance(fitted, dict) else None
    if isinstance(fitted_at, int | float) and float(fitted_at) <= budget + 1e-12 \
            and isinstance(fitted.get("policy"), dict):
        return PressureChoice(dict(fitted["policy"]), f"bundle (fitted at {fitted_at:.2%})")
    why = ("the bundle has no pressure policy" if not isinstance(fitted, dict) else
           f"the bundle's was fitted at {fitted.get('budget')}, looser than {budget:.2%}")
    if sessions is None:
        return PressureChoice(None, f"{why}, and no store to derive one from")
    return _from_audit_sample(model, budget, sessions, why)


def _from_audit_sample(model: Any, budget: float, sessions: Callable[[], Any],
                       why: str) -> PressureChoice:
    from classifier.thresholds import PRESSURE_DELTA
    from db.audit import AuditFilter
    from db.audit_loss import audit_answers
    from db.session import session_scope
    from doctriage.policy_tuning import (
        TuneOptions,
        TuneRefused,
        active_policy,
        decide,
        rule_for,
    )

    try:
        with session_scope(sessions()) as s:
            active = active_policy(s, model)
            rows = [r for r in audit_answers(s, AuditFilter(model_version=str(model.version)))
                    if len(r.exit_answers) == model.num_stages]
        rule = rule_for(TuneOptions(budget=budget, delta=PRESSURE_DELTA), active)
        report = decide(rows, model, active, rule)
    except TuneRefused as exc:
        return PressureChoice(None, f"{why}; the audit sample cannot derive one ({exc})")
    proposed = report["proposed"]
    if proposed["flops_ratio"] >= report["current"].get("flops_ratio", 1.0):
        return PressureChoice(None, f"{why}; on the audit sample nothing is cheaper than the "
                                    "normal policy at the pressure budget")
    return PressureChoice(dict(proposed["policy"]),
                          f"audit sample ({report['pages']} pages), {why}")


def pressure_mode(model: Any, budget: float, active: Callable[[], bool],
                  sessions: Callable[[], Any] | None = None) -> PressureMode | None:
    """The runtime's PressureMode (None: load-adaptive exits off, budget 0), deciding while
    `active()` (the gauge) says so. The bundle's policy is checked now; one derived from the
    audit sample is read at the first classify under pressure (not while a worker builds its
    runtime under workers.context's lock, which the store's session factory takes too)."""
    if budget <= 0:
        return None
    fitted = choose_pressure_spec(model, budget, None)
    if fitted.spec is not None:
        policy = _loaded(model, fitted)
        assert policy is not None
        return PressureMode.of(*policy, active)
    return PressureMode(active, lambda: _loaded(model, choose_pressure_spec(model, budget,
                                                                           sessions), budget))


def _loaded(model: Any, choice: PressureChoice,
            budget: float | None = None) -> tuple[ExitPolicy, str] | None:
    if choice.spec is None:
        log.warning("no pressure exit policy at budget %.2f%%: %s; under backlog pressure the "
                    "normal policy decides", 100 * (budget or 0.0), choice.source)
        return None
    policy = checked_policy(choice.spec, model.num_stages)
    version = policy_version(str(model.version), choice.spec, pressure=True)
    log.info("pressure exit policy %s from the %s", version, choice.source)
    return policy, version
