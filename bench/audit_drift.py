"""Does `audit loss` catch a loosened exit policy? Seeded runs of a simulated drift.

Each run writes `--pages` early answers to a fresh SQLite store, of which ~`--drift` differ
from the full-depth answer. Low-confidence pages differ more often (P(differ) grows with
1 - confidence), as they do with a real model. Pages are routed by the workers' own rule
(`workers.steps.full_depth_routing`: below `--reroute-below`, or drawn by the seeded
`audit_pick` at `--audit-fraction`) and only routed pages get a full-depth row, as in
production; every row goes through `db.repository.record_predictions`. Then the same query as
`doctriage audit loss` (`db.audit_loss.loss`) estimates the loss from the audit sample.
Reported per run and in all: whether the estimate is flagged (the 95% interval's lower bound
above `--budget`) and whether the interval covers the true disagreement (over all the run's
pages, known here because the simulation knows every full-depth answer); beside it, the biased
figure a reader of the re-routes alone would get.

Then, with `--tune-pages N` (0: skip), the re-tuning: N more pages of the same drift are
stored the same way, `doctriage thresholds tune --apply`'s code (doctriage.policy_tuning.tune,
on a two-exit model: the early answer and full depth) proposes and stores a threshold from
their audit sample, and the threshold is applied to `--pages` fresh pages of the same drift,
whose true disagreement (known to the simulation) is compared with the budget. The tuner needs
460 sampled pages at a 0.5-point budget (delta 0.1), so N is about 460 / audit fraction.

    python -m bench.audit_drift [--runs 20] [--pages 5000] [--audit-fraction 0.02]
        [--drift 0.05] [--budget 0.005] [--tune-pages 25000] [--seed 0] [--out FILE]

Prints JSON and writes bench/results/audit_drift.json (or --out). Goals (issue 17): flagged in
at least 18 of 20 runs, covered in at least 19 of 20, and the tuned policy's disagreement back
inside the budget.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sqlalchemy import and_, case, func, select

from bench import harness
from db import audit_loss
from db import repository as repo
from db.models import Prediction
from db.session import make_engine, migrate, session_factory, session_scope
from workers.steps import RerouteOptions, full_depth_routing

CLASSES = ["letter", "memo", "invoice", "form", "email", "report", "resume", "budget"]
PAGES_PER_DOCUMENT = 50
VERSION = "sim-model"
POLICY = "sim-model+ploose"


def simulate(rng: random.Random, pages: int, drift: float) -> list[tuple[float, str, str]]:
    """(confidence, early label, full label) per page. Confidence = U^0.25 (mostly high);
    P(differ) = k (1 - confidence), k chosen so that the mean is `drift` (E[1 - U^0.25] = 0.2)."""
    k = drift / 0.2
    out = []
    for _ in range(pages):
        conf = rng.random() ** 0.25
        early = rng.choice(CLASSES)
        full = early
        if rng.random() < min(1.0, k * (1 - conf)):
            full = rng.choice([c for c in CLASSES if c != early])
        out.append((conf, early, full))
    return out


def store_run(sessions: Any, answers: list[tuple[float, str, str]],
              reroute: RerouteOptions) -> dict[str, int]:
    """Documents, pages and predictions of one run (bulk: executemany in the repository's
    chunks); full-depth rows only for the pages the routing rule sends there."""
    counts = {"rerouted": 0, "audit_sample": 0}
    with session_scope(sessions) as s:
        for start in range(0, len(answers), PAGES_PER_DOCUMENT):
            part = answers[start : start + PAGES_PER_DOCUMENT]
            folder = f"s3://drift/in/{start // 1000:02d}/"  # five sources of 1,000 pages
            doc_id, _ = repo.register_document(s, f"{folder}doc-{start:06d}.pdf",
                                               etag=str(start))
            ids = repo.upsert_pages(s, doc_id, [
                repo.PageRecord(n, "text_layer", 100, None, 1700, 2200)
                for n in range(1, len(part) + 1)])
            rows = []
            for pid, (conf, early, full) in zip(ids, part, strict=True):
                routing = full_depth_routing(pid, conf, reroute)
                reason = routing.reason if routing else None
                sampled = bool(routing and routing.audit_sample)
                rows.append(repo.PredictionRecord(pid, VERSION, "early", early, conf, 0, 0,
                                                  [conf], None, POLICY, reason, sampled))
                if routing is not None:
                    counts["rerouted"] += 1
                    counts["audit_sample"] += sampled
                    rows.append(repo.PredictionRecord(
                        pid, VERSION, "full", full, 0.9, 6, 6, [0.9], None, POLICY, reason,
                        sampled, [(early, conf), (full, 0.9)]))
            repo.record_predictions(s, rows)
    return counts


def reroutes_only(sessions: Any) -> float | None:
    """The share a reader of every re-routed page would report (biased: mostly low confidence)."""
    p = Prediction.__table__
    early, full = p.alias("e"), p.alias("f")
    on = and_(full.c.page_id == early.c.page_id, full.c.pass_name == "full")
    differ = func.sum(case((early.c.label != full.c.label, 1), else_=0))
    query = (select(func.count(), differ).select_from(early.join(full, on))
             .where(early.c.pass_name == "early"))
    with session_scope(sessions) as s:
        n, k = s.execute(query).one()
    return int(k or 0) / int(n) if n else None


class TwoExitModel:
    """What the tuner reads of a model, for the simulated one: two exits (the early answer
    after the embeddings, full depth after layer 6), FLOPs growing with depth, and the loose
    policy in force (everything exits early)."""

    version = VERSION
    label_names = CLASSES
    num_stages = 2
    exit_layers: ClassVar[list[int]] = [0, 6]
    policy_spec: ClassVar[dict[str, Any]] = {"name": "max_softmax", "thresholds": [0.0, 0.0]}
    metadata: ClassVar[dict[str, Any]] = {}

    def stage_flops(self) -> list[float]:
        return [0.05, 1.0]

    def full_flops(self) -> float:
        return 1.0


def tune_and_check(index: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The re-tuning of one run (see the module docstring): the stored proposal, and the true
    disagreement of fresh pages under it."""
    from doctriage.policy_tuning import TuneOptions, TuneRefused, tune

    seed = args.seed + index
    engine = make_engine(f"sqlite:///{folder / f'tune-{index:02d}.db'}")
    try:
        migrate(engine)
        sessions = session_factory(engine)
        store_run(sessions, simulate(random.Random(seed + 10_000), args.tune_pages, args.drift),
                  RerouteOptions(args.reroute_below, args.audit_fraction, seed + 10_000))
        try:
            report = tune(sessions, TwoExitModel(), TuneOptions(budget=args.budget, apply=True))
        except TuneRefused as exc:
            return {"tuned": False, "refused": str(exc)}
    finally:
        engine.dispose()
    threshold = float(report["proposed"]["thresholds"][0])
    fresh = simulate(random.Random(seed + 20_000), args.pages, args.drift)
    # float32, as the serving runtime compares calibrated confidences
    stays = [(e, f) for c, e, f in fresh if float(np.float32(c)) >= threshold]
    after = sum(e != f for e, f in stays) / len(fresh)
    return {"tuned": True, "sampled_pages": report["pages"], "threshold": threshold,
            "stored": report["applied"]["stored"], "early_share_after": len(stays) / len(fresh),
            "estimated_loss_after": report["proposed"]["loss"]["estimate"],
            "true_disagreement_after": after, "inside_budget": after <= args.budget}


def one_run(index: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    seed = args.seed + index
    answers = simulate(random.Random(seed), args.pages, args.drift)
    engine = make_engine(f"sqlite:///{folder / f'run-{index:02d}.db'}")
    try:
        migrate(engine)
        sessions = session_factory(engine)
        reroute = RerouteOptions(args.reroute_below, args.audit_fraction, seed)
        counts = store_run(sessions, answers, reroute)
        t0 = time.perf_counter()
        with session_scope(sessions) as s:
            total = audit_loss.loss(s)["total"]
        query_ms = (time.perf_counter() - t0) * 1000
        biased = reroutes_only(sessions)
    finally:
        engine.dispose()
    truth = sum(e != f for _, e, f in answers) / len(answers)
    covered = total["lower"] is not None and total["lower"] <= truth <= total["upper"]
    tuned = tune_and_check(index, args, folder) if args.tune_pages else None
    return {
        "seed": seed, **counts, "tune": tuned, "sampled_pages": total["pages"],
        "differ": total["differ"],
        "estimate": total["estimate"], "lower": total["lower"], "upper": total["upper"],
        "true_disagreement": truth, "flagged": audit_loss.over_budget(total, args.budget),
        "covered": covered, "reroutes_only_estimate": biased, "query_ms": round(query_ms, 2),
    }


def main() -> int:
    p = harness.parser(__doc__, "audit_drift", harness.Common(threads=False, seed=0))
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--pages", type=int, default=5000)
    p.add_argument("--audit-fraction", type=float, default=0.02)
    p.add_argument("--drift", type=float, default=0.05,
                   help="mean share of early answers that differ from full depth")
    p.add_argument("--budget", type=float, default=0.005)
    p.add_argument("--reroute-below", type=float, default=0.5)
    p.add_argument("--tune-pages", type=int, default=25_000,
                   help="pages whose audit sample the re-tuning reads (0: no re-tuning)")
    args = p.parse_args()
    if args.runs < 1 or args.pages < 1 or args.tune_pages < 0:
        raise harness.BadInput("--runs and --pages must be positive, --tune-pages >= 0")
    if not (0 < args.audit_fraction <= 1 and 0 <= args.drift <= 1 and 0 <= args.budget <= 1):
        raise harness.BadInput("--audit-fraction, --drift and --budget are shares (0-1)")
    run = harness.start(args, malloc=False)
    with tempfile.TemporaryDirectory(prefix="audit-drift-") as tmp:
        runs = [one_run(i, args, Path(tmp)) for i in range(args.runs)]
    flagged = sum(r["flagged"] for r in runs)
    covered = sum(r["covered"] for r in runs)
    tuned = [r["tune"] for r in runs if r["tune"] is not None]
    back_inside = sum(bool(t.get("inside_budget")) for t in tuned)
    out = {
        "bench": "audit_drift",
        "params": {k: v for k, v in vars(args).items() if k != "out"},
        "flagged": flagged,
        "covered": covered,
        "goals": {"flagged_at_least": 18 * args.runs / 20, "covered_at_least": 19 * args.runs / 20,
                  "flagged_met": flagged >= 18 * args.runs / 20,
                  "covered_met": covered >= 19 * args.runs / 20,
                  "tuned_back_inside_budget": f"{back_inside} of {len(tuned)}" if tuned else None},
        "tuned_back_inside_budget": back_inside if tuned else None,
        "mean_true_disagreement_after_tune": _mean([t.get("true_disagreement_after")
                                                    for t in tuned]) if tuned else None,
        "mean_sampled_pages": sum(r["sampled_pages"] for r in runs) / len(runs),
        "mean_true_disagreement": sum(r["true_disagreement"] for r in runs) / len(runs),
        "mean_reroutes_only_estimate": _mean([r["reroutes_only_estimate"] for r in runs]),
        "runs": runs,
        "note": "simulated answers on real SQLite stores; the estimate is db.audit_loss.loss, "
                "the query `doctriage audit loss` runs",
    }
    harness.write_result(out, args.out, run)
    return 0


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


if __name__ == "__main__":
    harness.run_main(main)
