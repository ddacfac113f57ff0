"""The early-exit loss gauge: the reconciler's refresh puts the audit sample's estimate (the
same figures as `audit loss`) on the metrics endpoint, at most once a minute, also from a
prefork child (multiprocess files)."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import prometheus_client
import pytest

from db import audit_loss
from db import repository as repo
from db.models import utcnow
from db.session import make_engine, migrate, session_factory, session_scope
from workers import loss_gauge


def _sample(name: str, **labels: str) -> float | None:
    return prometheus_client.REGISTRY.get_sample_value(name, labels)


@pytest.fixture
def sessions(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def _pairs(sessions, labels: list[tuple[str, str]], uri: str = "s3://b/in/a.pdf") -> None:
    with session_scope(sessions) as s:
        doc_id, _ = repo.register_document(s, uri, etag="e")
        ids = repo.upsert_pages(s, doc_id, [repo.PageRecord(n, "ocr", 1, None, 1, 1)
                                            for n in range(1, len(labels) + 1)])
        rows = []
        for pid, (early, full) in zip(ids, labels, strict=True):
            rows += [repo.PredictionRecord(pid, "m", "early", early, 0.9, 0, 0, [0.9], 1.0,
                                           "m+p", "audit_sample", True),
                     repo.PredictionRecord(pid, "m", "full", full, 0.9, 2, 2, [0.9], 1.0,
                                           "m+p", "audit_sample", True, [(full, 0.9)])]
        repo.record_predictions(s, rows)


def test_refresh_sets_the_gauges_to_the_audit_estimate(sessions, monkeypatch) -> None:
    monkeypatch.setattr(loss_gauge, "_last_refresh", None)
    assert loss_gauge.refresh(sessions)["pages"] == 0  # an empty store: NaN, not 0
    assert math.isnan(_sample("doctriage_early_exit_loss", bound="estimate"))
    _pairs(sessions, [("memo", "memo")] * 18 + [("memo", "letter")] * 2)
    clock = iter([100.0, 130.0, 161.0]).__next__
    total = loss_gauge.refresh_due(sessions, clock=clock)
    want = audit_loss.LossEstimate.of(20, 2)
    assert total is not None and total["estimate"] == pytest.approx(0.1)
    assert _sample("doctriage_early_exit_loss", bound="estimate") == pytest.approx(0.1)
    assert _sample("doctriage_early_exit_loss", bound="lower") == pytest.approx(want.lower)
    assert _sample("doctriage_early_exit_loss", bound="upper") == pytest.approx(want.upper)
    assert _sample("doctriage_early_exit_loss_sample_pages") == 20
    _pairs(sessions, [("x", "y")], uri="s3://b/in/b.pdf")  # unseen until a minute has passed
    assert loss_gauge.refresh_due(sessions, clock=clock) is None  # 30 s later
    assert _sample("doctriage_early_exit_loss_sample_pages") == 20
    assert loss_gauge.refresh_due(sessions, clock=clock)["pages"] == 21  # 61 s later
    assert _sample("doctriage_early_exit_loss", bound="estimate") == pytest.approx(3 / 21)
    # only the last day: a window that ends before today's rows sees none
    assert loss_gauge.refresh(sessions, now=utcnow() - timedelta(days=2))["pages"] == 0


def test_a_prefork_childs_value_reaches_the_endpoint(tmp_path: Path) -> None:
    """In multiprocess mode (doctriage worker) the value set in a child process is served."""
    script = textwrap.dedent(f"""
        import os
        from workers import metrics
        metrics.enable_multiprocess({str(tmp_path / 'prom')!r})
        if os.fork() == 0:
            metrics.record_loss_estimate(50, 0.04, 0.01, 0.13)
            os._exit(0)
        os.wait()
        value = metrics.registry().collect()
        found = {{(s.name, tuple(sorted(s.labels.items()))): s.value
                 for fam in value for s in fam.samples}}
        print(found[("doctriage_early_exit_loss", (("bound", "lower"),))],
              found[("doctriage_early_exit_loss_sample_pages", ())])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.01", "50.0"]
