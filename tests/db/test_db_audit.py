"""Audit queries on a seeded store with known figures, on SQLite and PostgreSQL, and the
`doctriage audit` commands on top of them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update

from db import audit
from db import repository as repo
from db.audit import AuditFilter
from db.models import HumanLabel, Prediction
from db.session import session_scope
from doctriage.reporting.calibration import calibration

DAY1 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
DAY2 = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
LATER = datetime(2026, 1, 2, 18, 0, tzinfo=UTC)

# (page index, model version, pass, label, confidence, exit stage, when)
SEED = [
    (1, "v1", "early", "invoice", 0.95, 0, DAY1),
    (2, "v1", "early", "invoice", 0.40, 2, DAY1),
    (2, "v1", "full", "invoice", 0.90, 3, DAY1),
    (3, "v1", "early", "letter", 0.30, 2, DAY1),
    (3, "v1", "full", "memo", 0.85, 3, DAY1),
    (4, "v1", "early", "memo", 0.80, 1, DAY1),
    (5, "v1", "early", "letter", 0.50, 1, DAY2),
    (5, "v1", "full", "letter", 0.70, 3, DAY2),
    (6, "v1", "early", "form", 0.99, 0, DAY2),
    (1, "v2", "early", "invoice", 0.60, 1, LATER),
]
HOSTILE = "x' OR 1=1 --"


@pytest.fixture
def seeded(factory):
    """Six pages of one document; returns {page index: page id}."""
    with session_scope(factory) as s:
        doc_id, _ = repo.register_document(
            s, "file:///docs/a file, with comma.pdf", sha256="a" * 64
        )
        ids = repo.upsert_pages(
            s, doc_id, [repo.PageRecord(n, "ocr", 5, None, 10, 10) for n in range(1, 7)]
        )
        pages = dict(zip(range(1, 7), ids, strict=True))
        for idx, version, pass_name, label, conf, stage, when in SEED:
            repo.record_predictions(
                s,
                [
                    repo.PredictionRecord(
                        pages[idx], version, pass_name, label, conf, stage, stage * 4, [conf], 1.0
                    )
                ],
            )
            s.execute(
                update(Prediction)
                .where(
                    Prediction.page_id == pages[idx],
                    Prediction.model_version == version,
                    Prediction.pass_name == pass_name,
                )
                .values(created_at=when)
            )
        # Page 3 was first labelled "letter", then corrected to "memo": the newest counts.
        for idx, label, when in [
            (2, "invoice", DAY2),
            (3, "letter", DAY1),
            (3, "memo", DAY2),
            (4, "letter", DAY2),
            (6, "form", DAY2),
        ]:
            label_id = repo.add_human_label(s, pages[idx], label, "tester")
            s.execute(update(HumanLabel).where(HumanLabel.id == label_id).values(created_at=when))
    return pages


def test_summary_figures(factory, seeded) -> None:
    with session_scope(factory) as s:
        result = audit.summary(s)
    groups = {(g["model_version"], g["day"]): g for g in result["groups"]}
    assert list(groups) == [("v1", "2026-01-01"), ("v1", "2026-01-02"), ("v2", "2026-01-02")]
    g = groups[("v1", "2026-01-01")]
    assert (g["pages"], g["rerouted"], g["reroute_rate"]) == (4, 2, 0.5)
    assert g["mean_confidence"] == pytest.approx(0.6125)
    assert g["exit_stages"] == {"0": 1, "1": 1, "2": 2}
    assert g["classes"] == {"invoice": 2, "memo": 2}  # final labels: page 3 is memo (full depth)
    g = groups[("v1", "2026-01-02")]
    assert (g["pages"], g["rerouted"], g["exit_stages"], g["classes"]) == (
        2,
        1,
        {"0": 1, "1": 1},
        {"form": 1, "letter": 1},
    )
    assert g["mean_confidence"] == pytest.approx(0.745)
    t = result["total"]
    assert (t["pages"], t["rerouted"]) == (7, 3)
    assert t["mean_confidence"] == pytest.approx(4.54 / 7)
    assert t["exit_stages"] == {"0": 2, "1": 3, "2": 2}
    assert t["classes"] == {"form": 1, "invoice": 3, "letter": 1, "memo": 2}


def test_summary_filters(factory, seeded) -> None:
    with session_scope(factory) as s:
        memo = audit.summary(s, AuditFilter(label="memo", model_version="v1"))
        day2 = audit.summary(s, AuditFilter(since=DAY2.replace(hour=0)))
        day1 = audit.summary(s, AuditFilter(until=DAY2.replace(hour=0)))
    assert [(g["day"], g["pages"], g["rerouted"]) for g in memo["groups"]] == [("2026-01-01", 2, 1)]
    assert memo["groups"][0]["mean_confidence"] == pytest.approx(0.55)
    assert {(g["model_version"], g["day"]) for g in day2["groups"]} == {
        ("v1", "2026-01-02"),
        ("v2", "2026-01-02"),
    }
    assert day1["total"]["pages"] == 4


def test_low_confidence(factory, seeded) -> None:
    with session_scope(factory) as s:
        newest = audit.low_confidence(s, 0.75)
        v1 = audit.low_confidence(s, 0.75, AuditFilter(model_version="v1"))
        letters = audit.low_confidence(s, 0.95, AuditFilter(label="letter"))
        limited = audit.low_confidence(s, 1.0, limit=2)
    # Final answers: page 1 -> v2 early 0.60 (newest version); page 5 -> full 0.70.
    # exit_stage: where the early pass left, also for page 5's full-depth answer (stored as 3)
    assert [(r["page_id"], r["confidence"], r["pass_name"], r["exit_stage"]) for r in newest] == [
        (seeded[1], pytest.approx(0.60), "early", 1),
        (seeded[5], pytest.approx(0.70), "full", 1),
    ]
    assert newest[0]["document_uri"] == "file:///docs/a file, with comma.pdf"
    assert newest[0]["page_number"] == 1 and newest[0]["model_version"] == "v2"
    assert [r["page_id"] for r in v1] == [seeded[5]]
    assert [r["page_id"] for r in letters] == [seeded[5]]
    assert len(limited) == 2


def test_reroute_agreement(factory, seeded) -> None:
    with session_scope(factory) as s:
        result = audit.reroutes(s)
        letters = audit.reroutes(s, AuditFilter(label="letter"))
    assert [(g["exit_stage"], g["class"], g["pages"], g["agree"]) for g in result["groups"]] == [
        (1, "letter", 1, 1),
        (2, "invoice", 1, 1),
        (2, "letter", 1, 0),
    ]
    assert result["total"] == {"pages": 3, "agree": 2, "agreement": pytest.approx(2 / 3)}
    assert letters["total"]["pages"] == 2 and letters["total"]["agree"] == 1


def test_calibration(factory, seeded) -> None:
    with session_scope(factory) as s:
        result = calibration(s)
    rows = {(g["pass"], g["exit_stage"]): g for g in result["groups"]}
    # exit_stage is the early pass's everywhere: the full answers of pages 2 and 3 are the
    # full-depth row of stage 2, where those pages left the early pass and were re-routed
    assert set(rows) == {("early", 0), ("early", 1), ("early", 2), ("full", 2)}
    assert (rows[("early", 0)]["pages"], rows[("early", 0)]["accuracy"]) == (1, 1.0)
    assert rows[("early", 0)]["ece"] == pytest.approx(0.01)
    assert (rows[("early", 1)]["accuracy"], rows[("early", 1)]["ece"]) == (0.0, pytest.approx(0.8))
    assert rows[("early", 2)]["accuracy"] == 0.5  # page 3: early "letter" vs newest label "memo"
    assert rows[("early", 2)]["ece"] == pytest.approx(0.45)
    assert rows[("full", 2)]["accuracy"] == 1.0 and rows[("full", 2)]["ece"] == pytest.approx(0.125)
    early = result["total"]["early"]
    assert (early["pages"], early["accuracy"]) == (4, 0.5)
    assert early["mean_confidence"] == pytest.approx(0.6225)
    assert early["ece"] == pytest.approx(1.71 / 4)


def test_audit_ece_is_the_bundles_ece(factory, seeded) -> None:
    """One ECE: the audit's figure for a set of pages is classifier.calibration.ece of the same
    pages with the same bins, and the CLI's default bins are the bundle's."""
    from classifier.calibration import DEFAULT_BINS, ece
    from doctriage.commands.audit import ECE_BINS

    assert ECE_BINS == DEFAULT_BINS
    with session_scope(factory) as s:
        pairs = [(c, ok) for p, _, c, ok in audit.calibration_pairs(s) if p == "early"]
        for bins in (DEFAULT_BINS, 10, 3):
            early = calibration(s, bins=bins)["total"]["early"]
            assert early["ece"] == pytest.approx(ece([c for c, _ in pairs], [ok for _, ok in pairs],
                                                     bins))


def test_hostile_filters_are_data(factory, seeded) -> None:
    hostile = AuditFilter(label=HOSTILE, model_version=HOSTILE)
    with session_scope(factory) as s:
        assert audit.summary(s, hostile)["total"]["pages"] == 0
        assert audit.summary(s, AuditFilter(label=HOSTILE))["groups"] == []
        assert audit.low_confidence(s, 1.0, hostile) == []
        assert audit.reroutes(s, AuditFilter(label=HOSTILE))["total"]["pages"] == 0
        assert calibration(s, AuditFilter(model_version=HOSTILE))["groups"] == []
        audit.label(s, seeded[1], "'); DROP TABLE predictions; --", "mallory")
    with session_scope(factory) as s:
        assert s.execute(select(func.count()).select_from(Prediction)).scalar_one() == len(SEED)
        stored = s.execute(select(HumanLabel.label).where(HumanLabel.who == "mallory")).scalar_one()
        assert stored == "'); DROP TABLE predictions; --"
        with pytest.raises(LookupError):
            audit.label(s, 999_999, "memo", "x")


@pytest.fixture
def cli(audit_cli, seeded):
    return audit_cli


def test_cli_outputs(cli, seeded) -> None:
    res = cli("summary", "--json", "--model-version", "v1")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["total"]["pages"] == 6 and data["filters"]["model_version"] == "v1"
    res = cli("summary", "--csv", "--until", "2026-01-01")
    assert res.exit_code == 0
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("model_version,day,pages,rerouted,reroute_rate,mean_confidence")
    assert lines[1].startswith("v1,2026-01-01,4,2,0.5,0.6125,0=1;1=1;2=2,invoice=2;memo=2")
    assert len(lines) == 2
    res = cli("low-confidence", "--below", "0.75", "--csv")
    assert res.exit_code == 0 and '"file:///docs/a file, with comma.pdf"' in res.stdout
    res = cli("reroutes")
    assert res.exit_code == 0 and "agreement 66.7%" in res.stdout
    res = cli("calibration", "--json", "--class", "memo")
    assert res.exit_code == 0 and json.loads(res.stdout)["total"]["full"]["pages"] == 1
    res = cli("summary", "--class", HOSTILE)
    assert res.exit_code == 0 and "total: 0 pages" in res.stdout


def test_cli_label_and_bad_input(cli, seeded) -> None:
    res = cli("label", str(seeded[5]), "letter", "--who", "bob", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["who"] == "bob"
    for args, message in [
        (("label", "999999", "memo"), "no page with id 999999"),
        (("summary", "--since", "yesterday"), "--since 'yesterday': not a date"),
        (("low-confidence", "--below", "7"), "--below must be between 0 and 1"),
        (("summary", "--json", "--csv"), "choose one of --json and --csv"),
    ]:
        res = cli(*args)
        assert res.exit_code == 2, (args, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
        assert "Traceback" not in res.output
