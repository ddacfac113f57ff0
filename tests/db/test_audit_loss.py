"""`audit loss` on a store with known answers, on SQLite and PostgreSQL: the estimate counts the
audit sample only, its Wilson interval, the groupings, and the command's outputs and exit
status."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update

from db import audit_loss
from db import repository as repo
from db.audit import AuditFilter
from db.models import Document, Prediction
from db.session import session_scope

DAY1 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DAY2 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOSTILE_LABEL = "inv'oice\"; DROP TABLE predictions; --"
HOSTILE_SOURCE = "s3://bucket/in/o'hara; DROP TABLE documents; --/ünï 🙂/"


def _pair(page_id, *, early, full, stage=0, sampled=True, reason="audit_sample",
          version="m1", policy="m1+pa"):
    """An early row and its full-depth row."""
    return [
        repo.PredictionRecord(page_id, version, "early", early, 0.9, stage, stage, [0.9], 1.0,
                              policy, reason, sampled),
        repo.PredictionRecord(page_id, version, "full", full, 0.8, 3, 3, [0.8], 2.0, policy,
                              reason, sampled, [(early, 0.9), (full, 0.8)]),
    ]


# (source folder, day, early, full, stage, policy): the audit sample, 20 pages, 4 differ
SAMPLE = (
    [("file:///a/", DAY1, "memo", "memo", 0, "m1+pa")] * 8
    + [("file:///a/", DAY1, "memo", "letter", 0, "m1+pa")] * 2
    + [(HOSTILE_SOURCE, DAY2, HOSTILE_LABEL, HOSTILE_LABEL, 1, "m1+pb")] * 8
    + [(HOSTILE_SOURCE, DAY2, HOSTILE_LABEL, "memo", 1, "m1+pb")] * 2
)


def _page(s, uri: str) -> int:
    doc_id, _ = repo.register_document(s, uri, sha256=uri.encode().hex()[:64])
    (pid,) = repo.upsert_pages(s, doc_id, [repo.PageRecord(1, "text_layer", 3, None, 1, 1)])
    return pid


def _store(s, rows, *, extra=()):
    """One document per page (its uri under the row's folder), with its two predictions;
    `extra` pages under file:///x/ on DAY1."""
    for i, (folder, day, early, full, stage, policy) in enumerate(rows):
        pid = _page(s, f"{folder}doc-{i}.pdf")
        repo.record_predictions(s, _pair(pid, early=early, full=full, stage=stage,
                                         policy=policy))
        s.execute(update(Prediction).where(Prediction.page_id == pid).values(created_at=day))
    for i, (early, full, sampled, reason) in enumerate(extra):
        pid = _page(s, f"file:///x/extra-{i}.pdf")
        repo.record_predictions(s, _pair(pid, early=early, full=full, sampled=sampled,
                                         reason=reason))
        s.execute(update(Prediction).where(Prediction.page_id == pid).values(created_at=DAY1))


# Re-routed for low confidence alone (not sampled): they disagree a lot, and must not count.
LOW_ONLY = [("memo", "letter", False, "low_confidence")] * 15
# Both low-confidence and drawn: in the sample (reason low_confidence, audit_sample true).
LOW_AND_SAMPLED = [("memo", "memo", True, "low_confidence")] * 5


@pytest.fixture
def loss_store(factory):
    with session_scope(factory) as s:
        _store(s, SAMPLE, extra=LOW_ONLY + LOW_AND_SAMPLED)
        # An early answer drawn for the audit whose full pass has not run yet: not a pair.
        doc_id, _ = repo.register_document(s, "file:///a/pending.pdf", sha256="p" * 64)
        (pid,) = repo.upsert_pages(s, doc_id, [repo.PageRecord(1, "ocr", 3, None, 1, 1)])
        repo.record_predictions(s, _pair(pid, early="memo", full="x")[:1])


def test_wilson_interval() -> None:
    # Reference values (Wilson 1927; as statsmodels' proportion_confint(method="wilson")).
    lo, hi = audit_loss.wilson(5, 100)
    assert (lo, hi) == (pytest.approx(0.021544, abs=1e-5), pytest.approx(0.111743, abs=1e-5))
    lo, hi = audit_loss.wilson(0, 100)
    assert lo == 0.0 and hi == pytest.approx(0.036994, abs=1e-5)  # never a zero-width interval
    assert audit_loss.wilson(0, 0) == (None, None)
    lo, hi = audit_loss.wilson(100, 100)
    assert hi == 1.0 and lo == pytest.approx(0.963006, abs=1e-5)


def test_only_the_audit_sample_counts(factory, loss_store) -> None:
    with session_scope(factory) as s:
        result = audit_loss.loss(s)
    t = result["total"]
    # 20 + the 5 low-confidence pages that were also drawn; not the 15 low-confidence-only
    # re-routes (all differing), nor the drawn page still waiting for its full pass.
    assert (t["pages"], t["differ"]) == (25, 4)
    assert t["estimate"] == pytest.approx(4 / 25)
    assert (t["lower"], t["upper"]) == tuple(pytest.approx(x) for x in audit_loss.wilson(4, 25))
    assert t["lower"] < 4 / 25 < t["upper"]


def test_groupings(factory, loss_store) -> None:
    with session_scope(factory) as s:
        by = {k: audit_loss.loss(s, by=k)["groups"] for k in audit_loss.GROUPINGS}
        memo = audit_loss.loss(s, AuditFilter(label="memo"))["total"]
        day2 = audit_loss.loss(s, AuditFilter(since=DAY2.replace(hour=0)), "class")
        none = audit_loss.loss(s, AuditFilter(model_version=HOSTILE_LABEL), "source")
    assert [(g["day"], g["pages"], g["differ"]) for g in by["day"]] == [
        ("2026-03-01", 15, 2), ("2026-03-02", 10, 2)]
    classes = {g["class"]: (g["pages"], g["differ"]) for g in by["class"]}
    assert classes == {"memo": (15, 2), HOSTILE_LABEL: (10, 2)}  # the early class
    assert {g["stage"]: g["pages"] for g in by["stage"]} == {0: 15, 1: 10}
    sources = {g["source"]: (g["pages"], g["differ"]) for g in by["source"]}
    # one document per page: folded into its folder
    assert sources == {"file:///a/": (10, 2), HOSTILE_SOURCE: (10, 2), "file:///x/": (5, 0)}
    assert {g["version"]: g["pages"] for g in by["version"]} == {"m1+pa": 15, "m1+pb": 10}
    for groups in by.values():
        for g in groups:
            assert g["lower"] <= g["estimate"] <= g["upper"]
    assert (memo["pages"], memo["differ"]) == (15, 2)
    assert [(g["class"], g["pages"]) for g in day2["groups"]] == [(HOSTILE_LABEL, 10)]
    assert none["total"]["pages"] == 0 and none["groups"] == []
    assert none["total"]["estimate"] is None and not audit_loss.over_budget(none["total"], 0.0)


def test_unknown_grouping_is_refused(factory) -> None:
    with session_scope(factory) as s, pytest.raises(ValueError, match="cannot group by"):
        audit_loss.loss(s, by="page")


def test_hostile_strings_are_stored_and_grouped_as_data(factory, loss_store) -> None:
    with session_scope(factory) as s:
        hostile = audit_loss.loss(s, AuditFilter(label=HOSTILE_LABEL), "source")
        assert s.execute(select(func.count()).select_from(Document)).scalar_one() == 41
        assert s.execute(select(func.count()).select_from(Prediction)).scalar_one() == 81
    assert [(g["source"], g["pages"], g["differ"]) for g in hostile["groups"]] == [
        (HOSTILE_SOURCE, 10, 2)]


def test_source_prefix() -> None:
    assert audit_loss.source_prefix("s3://bucket/in/2026/a.pdf") == "s3://bucket/in/2026/"
    assert audit_loss.source_prefix("file:///docs/a%20b.pdf") == "file:///docs/"
    assert audit_loss.source_prefix("no-slash") == "no-slash"


@pytest.fixture
def cli(audit_cli, loss_store):
    return audit_cli


def test_cli_outputs(cli) -> None:
    res = cli("loss", "--json", "--by", "stage", "--budget", "0.5")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["total"]["pages"] == 25 and data["budget"] == 0.5 and not data["over_budget"]
    assert [g["stage"] for g in data["groups"]] == [0, 1]
    res = cli("loss", "--csv", "--by", "class", "--budget", "0.5")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert list(rows[0]) == ["class", "pages", "differ", "estimate", "lower", "upper"]
    assert {r["class"]: int(r["differ"]) for r in rows} == {"memo": 2, HOSTILE_LABEL: 2}
    res = cli("loss", "--csv", "--budget", "0.5")  # no --by: the total, one row
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 1 and rows[0]["pages"] == "25"
    res = cli("loss", "--by", "source", "--budget", "0.5")
    assert res.exit_code == 0
    assert "file:///a/" in res.stdout and "estimated loss 16.00% [" in res.stdout


def test_cli_exit_status_follows_the_budget(cli) -> None:
    lower = audit_loss.wilson(4, 25)[0]
    res = cli("loss", "--budget", f"{lower - 0.001:.4f}")
    assert res.exit_code == 1, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("over budget: estimated loss 16.00%, lower bound")
    res = cli("loss", "--json", "--budget", f"{lower + 0.001:.4f}")
    assert res.exit_code == 0 and res.stderr == ""
    # the sample's pages of one class only: 2 of 15 differ, still above a tiny budget
    assert cli("loss", "--class", "memo", "--budget", "0.001").exit_code == 1
    assert cli("loss", "--class", HOSTILE_LABEL, "--budget", "0.5").exit_code == 0
    for args, message in [
        (("loss", "--by", "page"), "--by 'page': one of day, class, stage, source, version"),
        (("loss", "--budget", "2"), "--budget must be between 0 and 1"),
        (("loss", "--json", "--csv", "--budget", "0.5"), "choose one of --json and --csv"),
    ]:
        res = cli(*args)
        assert res.exit_code == 2, (args, res.output)
        assert res.stderr.strip().startswith("error: ") and message in res.stderr


def test_default_budget_is_the_bundles(cli, tmp_path, monkeypatch) -> None:
    """No --budget: the calibration budget recorded in the bundle's exits.json; a bundle
    without one gives 0.005."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    exits = {"label_names": ["memo"], "metadata": {"calibration": {"budget": 0.25}}}
    (bundle / "exits.json").write_text(json.dumps(exits))
    res = cli("loss", "--json", "--model", str(bundle))
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["budget"] == 0.25
    (bundle / "exits.json").write_text(json.dumps({"label_names": ["memo"]}))
    res = cli("loss", "--json", "--model", str(bundle))
    assert res.exit_code == 1  # 0.005 is below the lower bound
    assert json.loads(res.stdout)["budget"] == audit_loss.DEFAULT_BUDGET == 0.005
