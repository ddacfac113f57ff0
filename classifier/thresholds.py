"""Choosing exit thresholds on validation, on precomputed calibrated probabilities of every exit
(a search costs no model time). Two selections (`select_thresholds`):

- `ucb` (the default): Learn-then-Test. Global max-softmax thresholds on a fixed path from the
  strictest to the loosest are tested in order; a configuration passes when the exact
  (Clopper-Pearson) upper confidence bound, at confidence 1 - delta, on the share of pages whose
  early answer differs from the full-depth answer is within the budget. The walk stops at the
  first failure (fixed-sequence testing), so with probability >= 1 - delta every configuration
  that passed, the cheapest of which is chosen, holds the budget on pages from the same source
  as the validation pages. Nothing passing means no early exit (every page runs to the last
  exit).
- `point`: the lowest mean compute whose validation early-exit accuracy stays within the budget
  of full-depth accuracy (a point estimate: kept for comparison)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from classifier.policy import ExitPolicy, MaxSoftmax
from classifier.risk_bounds import clopper_pearson_upper

SELECTIONS = ("ucb", "point")
DEFAULT_DELTA = 0.1
# The pressure policy's bound holds at 95%: it decides whole backlogs, where its loss is
# measured on thousands of pages. At 90% the one fitted for the shipped bundle lost 2.08% of
# 2,019 backlog pages (budget 2%), at 95% 1.45% of 2,002, at the same pages/s
# (bench/results/pressure.json, pressure_delta10.json).
PRESSURE_DELTA = 0.05


@dataclass(frozen=True)
class ThresholdRule:
    """How thresholds are chosen: the budget (a share of pages, 0.005 = 0.5 points), the
    selection (`ucb` or `point`) and, for `ucb`, the confidence 1 - delta of its bound."""

    budget: float = 0.005
    selection: str = "ucb"
    delta: float = DEFAULT_DELTA


DEFAULT_RULE = ThresholdRule()
NEVER = 1.01  # a max-softmax threshold no page reaches: the page goes on to the next exit


@dataclass
class Simulation:
    accuracy: float
    mean_cost: float  # mean per-page cost in the units of `stage_costs`
    exit_stage: np.ndarray  # (N,) stage each page left at
    predictions: np.ndarray  # (N,)


def simulate(
    policy: ExitPolicy, probs: torch.Tensor, labels: torch.Tensor, stage_costs: Sequence[float]
) -> Simulation:
    """Replay `policy` on probs (N, S, C) of every exit: where would each page leave, and with
    what answer. stage_costs[s] = cost of a page that leaves at stage s."""
    n, s, _ = probs.shape
    exit_stage = torch.full((n,), s - 1, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    for k in range(s):
        leave = policy.decide(k, probs[:, : k + 1]) & ~done
        exit_stage[leave] = k
        done |= leave
    preds = probs[torch.arange(n), exit_stage].argmax(-1)
    costs = torch.tensor(stage_costs, dtype=torch.float64)[exit_stage]
    return Simulation(
        accuracy=float((preds == labels).double().mean()) if n else 0.0,
        mean_cost=float(costs.mean()) if n else 0.0,
        exit_stage=exit_stage.numpy(),
        predictions=preds.numpy(),
    )


def search_thresholds(
    probs: torch.Tensor,
    labels: torch.Tensor,
    stage_costs: Sequence[float],
    budget: float = 0.005,
    passes: int = 3,
) -> tuple[list[float], Simulation]:
    """Per-exit max-softmax thresholds: start from the best global threshold, then improve one
    exit at a time (coordinate descent) while accuracy >= full-depth accuracy - budget."""
    n, s, _ = probs.shape
    full_acc = float((probs[:, -1].argmax(-1) == labels).double().mean()) if n else 0.0
    floor = full_acc - budget - 1e-12
    conf = probs.max(-1).values
    candidates = (
        sorted({NEVER, *np.quantile(conf[:, :-1].numpy(), np.linspace(0, 1, 41)).tolist()})
        if n
        else [NEVER]
    )

    def run(th: list[float]) -> Simulation:
        return simulate(MaxSoftmax(s, th), probs, labels, stage_costs)

    best_th = [NEVER] * (s - 1) + [0.0]
    best = run(best_th)
    for t in candidates:  # global threshold sweep
        th = [t] * (s - 1) + [0.0]
        sim = run(th)
        if sim.accuracy >= floor and sim.mean_cost < best.mean_cost:
            best_th, best = th, sim
    for _ in range(passes):  # per-exit refinement
        improved = False
        for k in range(s - 1):
            for t in candidates:
                th = list(best_th)
                th[k] = t
                sim = run(th)
                if sim.accuracy >= floor and (
                    sim.mean_cost < best.mean_cost - 1e-12
                    or (
                        abs(sim.mean_cost - best.mean_cost) <= 1e-12
                        and sim.accuracy > best.accuracy
                    )
                ):
                    best_th, best, improved = th, sim, True
        if not improved:
            break
    return [float(t) for t in best_th], best


@dataclass
class ThresholdChoice:
    """Chosen per-exit thresholds, their replay on validation, and what exits.json records."""

    thresholds: list[float]
    simulation: Simulation
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def fallback(self) -> bool:
        return bool(self.record.get("fallback"))


def ucb_path() -> list[float]:
    """The fixed sequence of global thresholds, strictest first: dense near 1 (where calibrated
    confidences crowd), then every 0.01 down to 0. Fixed in advance, not drawn from the
    validation pages, so the tests along it keep their guarantee."""
    near_one = 1.0 - np.logspace(-6, -1, 51)  # 0.999999 ... 0.9
    rest = np.linspace(0.9, 0.0, 91)[1:]
    return [float(t) for t in np.concatenate([near_one, rest])]


@lru_cache(maxsize=4096)
def _upper(k: int, n: int, delta: float) -> float:
    return clopper_pearson_upper(k, n, delta)


def upper_bound(k: int, n: int, delta: float) -> float:
    """The bound the ucb search tests: exact one-sided upper bound at 1 - delta on a
    disagreement rate seen k times in n pages."""
    return _upper(k, n, delta)


def min_pages(budget: float, delta: float) -> int | None:
    """The fewest pages on which any early exit can pass: the bound with no disagreement at all,
    1 - delta^(1/n), within the budget. None: no number of pages does (budget <= 0)."""
    if budget <= 0:
        return None
    if budget >= 1:
        return 1
    n = max(1, math.ceil(math.log(delta) / math.log1p(-budget)))
    while _upper(0, n, delta) > budget:  # float rounding at the edge
        n += 1
    while n > 1 and _upper(0, n - 1, delta) <= budget:
        n -= 1
    return n


def disagreements(sim: Simulation, probs: torch.Tensor) -> int:
    """Pages whose early answer differs from the full-depth (last exit) answer."""
    return int((sim.predictions != probs[:, -1].argmax(-1).numpy()).sum())


@dataclass(frozen=True)
class ExitAnswers:
    """What every exit answered, per page: `confidence` (N, S) calibrated max-softmax
    confidences and `labels` (N, S) label indices at each exit, stage 0 first, and `full` (N,)
    the full-depth label. Made from every exit's probabilities on validation pages
    (`from_probs`) or from the audit sample's stored full-depth rows (doctriage's tuner): the
    one input of the replay and of the ucb search, offline and live."""

    confidence: np.ndarray
    labels: np.ndarray
    full: np.ndarray

    @classmethod
    def from_probs(cls, probs: torch.Tensor) -> ExitAnswers:
        conf, labels = probs.max(-1)
        return cls(conf.numpy(), labels.numpy(), labels[:, -1].numpy())

    @property
    def pages(self) -> int:
        return int(self.confidence.shape[0])


@dataclass(frozen=True)
class Replay:
    exit_stage: np.ndarray  # (N,) stage each page leaves at
    predictions: np.ndarray  # (N,) its answer there
    disagreements: int  # pages whose answer differs from the full-depth label
    mean_cost: float  # mean per-page cost in the units of `stage_costs`


def replay(answers: ExitAnswers, thresholds: Sequence[float],
           stage_costs: Sequence[float]) -> Replay:
    """Max-softmax thresholds replayed on stored answers: a page leaves at the first exit k
    whose confidence reaches thresholds[k] (the last exit always answers), with that exit's
    label. Compared in the confidences' own dtype, as the served policy compares (float32)."""
    conf = answers.confidence
    n, s = conf.shape
    reach = conf >= np.asarray(list(thresholds)[:s], dtype=conf.dtype)
    reach[:, s - 1] = True
    stage = reach.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    preds = answers.labels[np.arange(n), stage]
    costs = np.asarray(stage_costs, dtype=np.float64)[stage]
    return Replay(stage, preds, int((preds != answers.full).sum()),
                  float(costs.mean()) if n else 0.0)


@dataclass(frozen=True)
class UcbSearch:
    thresholds: list[float]  # per exit, the last 0.0; NEVER everywhere else = no early exit
    replay: Replay  # the chosen thresholds replayed on the pages searched
    passed: int  # configurations on the path that held the budget before the first failure
    first_failed: float | None  # the global threshold that failed (None: the whole path held)


def ucb_search(answers: ExitAnswers, stage_costs: Sequence[float],
               rule: ThresholdRule = DEFAULT_RULE) -> UcbSearch:
    """Learn-then-Test along `ucb_path()` (see the module's note) on stored answers: the
    cheapest configuration of those that passed before the first failure, else no early exit.
    The one search: `select_thresholds` (validation probabilities) and `doctriage thresholds
    tune` (the audit sample) both call it."""
    n, s = answers.confidence.shape
    chosen = [NEVER] * (s - 1) + [0.0]
    best = replay(answers, chosen, stage_costs)
    passed, first_failed = 0, None
    for t in ucb_path():
        th = [t] * (s - 1) + [0.0]
        run = replay(answers, th, stage_costs)
        if _upper(run.disagreements, n, rule.delta) > rule.budget:
            first_failed = t
            break
        passed += 1
        if run.mean_cost < best.mean_cost - 1e-12:
            chosen, best = th, run
    return UcbSearch(chosen, best, passed, first_failed)


def ucb_thresholds(
    probs: torch.Tensor,
    labels: torch.Tensor,
    stage_costs: Sequence[float],
    budget: float = 0.005,
    delta: float = DEFAULT_DELTA,
) -> tuple[list[float], Simulation, dict[str, Any]]:
    """`ucb_search` on validation probabilities, the choice replayed as a `Simulation`. Labels
    are used only by the replay's accuracy: the tested loss (disagreement with full depth)
    needs none."""
    s = probs.shape[1]
    found = ucb_search(ExitAnswers.from_probs(probs), stage_costs,
                       ThresholdRule(budget, "ucb", delta))
    sim = simulate(MaxSoftmax(s, found.thresholds), probs, labels, stage_costs)
    path = {"passed": found.passed, "first_failed_threshold": found.first_failed}
    return found.thresholds, sim, path


def select_thresholds(
    probs: torch.Tensor,
    labels: torch.Tensor,
    stage_costs: Sequence[float],
    rule: ThresholdRule = DEFAULT_RULE,
) -> ThresholdChoice:
    """Per-exit thresholds by `rule.selection` (`ucb` or `point`), with the record exits.json
    keeps: method, delta, budget, and the chosen thresholds' validation disagreement with full
    depth and its upper bound at confidence 1 - delta (for `point` too, to compare)."""
    budget, selection, delta = rule.budget, rule.selection, rule.delta
    if selection not in SELECTIONS:
        raise ValueError(f"threshold selection must be one of {', '.join(SELECTIONS)}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), not {delta!r}")
    n = probs.shape[0]
    if selection == "point":
        thresholds, sim = search_thresholds(probs, labels, stage_costs, budget=budget)
        path: dict[str, Any] = {}
    else:
        thresholds, sim, path = ucb_thresholds(probs, labels, stage_costs, budget, delta)
    k = disagreements(sim, probs) if n else 0
    fallback = all(t >= NEVER for t in thresholds[:-1])
    record: dict[str, Any] = {
        "selection": selection,
        "delta": delta,
        "budget": budget,
        "loss": "disagreement with the full-depth answer",
        "validation_pages": n,
        "validation_disagreements": k,
        "validation_disagreement": k / n if n else 0.0,
        "validation_disagreement_ucb": _upper(k, n, delta),
        "fallback": fallback,
        **({"path": path} if path else {}),
    }
    if fallback:
        record["note"] = (
            "no threshold configuration's upper bound was within the budget: no early exit, "
            "every page runs to the last exit"
            if selection == "ucb" and not path.get("passed")
            else "no early exit: every page runs to the last exit"
        )
    return ThresholdChoice([float(t) for t in thresholds], sim, record)
