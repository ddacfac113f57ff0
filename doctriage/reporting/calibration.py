"""Calibration on human-labelled pages: db.audit gives the (pass, exit stage, confidence, correct)
rows, classifier.calibration computes accuracy, mean confidence, ECE and reliability bins exactly
as training and `evaluate` do."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy.orm import Session

from classifier.calibration import DEFAULT_BINS, reliability_bins, summarize
from db.audit import AuditFilter, calibration_pairs


def calibration(s: Session, f: AuditFilter | None = None,
                bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Accuracy, mean confidence and ECE of each pass by the early pass's exit stage (a
    full-depth row: pages re-routed from that stage), and per pass overall."""
    f = f or AuditFilter()
    cells: dict[tuple[str, int], list[tuple[float, bool]]] = defaultdict(list)
    for pass_name, stage, conf, correct in calibration_pairs(s, f):
        cells[(pass_name, stage)].append((conf, correct))
    by_pass: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    rows = []
    for (pass_name, stage), pairs in sorted(cells.items()):
        by_pass[pass_name].extend(pairs)
        rows.append({"pass": pass_name, "exit_stage": stage, **summarize(pairs, bins)})
    total = {name: summarize(pairs, bins) for name, pairs in sorted(by_pass.items())}
    return {"filters": f.as_dict(), "bins": bins, "total": total, "groups": rows}


def reliability_by_pass(s: Session, f: AuditFilter | None = None,
                        bins: int = DEFAULT_BINS) -> dict[str, list[dict[str, float]]]:
    """Reliability bins (classifier.calibration.reliability_bins) of each pass."""
    by_pass: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for pass_name, _, conf, correct in calibration_pairs(s, f or AuditFilter()):
        by_pass[pass_name].append((conf, correct))
    return {
        name: reliability_bins([c for c, _ in pairs], [ok for _, ok in pairs], bins)
        for name, pairs in sorted(by_pass.items())
    }
