"""`doctriage thresholds tune` on a live store: a too-loose policy in force (stored, taken up by
the runtime from the store) disagrees with full depth on ~5% of pages, measured through the real
classify and full-depth steps (tiny bundle, every page audit-sampled, SQLite and PostgreSQL);
tune proposes thresholds whose bound holds the budget, --apply stores them, and runtimes that
are already running (threaded and drain) classify fresh pages with them, record the new policy
version, and the measured disagreement is back inside the budget."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from auditkit import classify_audited
from modelkit import scribbled_contents
from sqlalchemy import select

from classifier.bundle import load_bundle
from classifier.live_policy import PolicyFeed
from classifier.policy import MaxSoftmax, policy_version
from classifier.predict import BatcherOptions, ClassifyRuntime
from db import audit_loss
from db import repository as repo
from db.models import Prediction
from db.policies import NewPolicy, add_policy, latest_policy, policy_history
from db.session import session_scope
from workers.policy_source import stored_policies

PAGES = 200
LOOSE = 0.95  # the tiny bundle's exits disagree with its last one on ~5% of pages above it
BUDGET_POINTS = 3.0


@pytest.fixture
def tune_cli(store_cli: Any) -> Any:
    """`doctriage thresholds tune ...` run in process against this test's store."""
    from doctriage.commands import thresholds as thresholds_cmd

    return store_cli(thresholds_cmd.register, "thresholds", "tune")


def classify(factory: Any, artifacts: Path, runtime: ClassifyRuntime,
             pages: Sequence[Any], name: str) -> list[int]:
    return classify_audited(factory, artifacts, runtime, pages, f"s3://bucket/tune/{name}.pdf")


def early_rows(factory: Any, ids: Sequence[int]) -> list[Prediction]:
    with session_scope(factory) as s:
        rows = s.execute(select(Prediction).where(Prediction.page_id.in_(list(ids)),
                                                  Prediction.pass_name == "early")).scalars()
        return list(rows)


def disagreement(factory: Any, ids: Sequence[int]) -> float:
    """Share of these pages whose early label differs from their full-depth label."""
    with session_scope(factory) as s:
        rows = s.execute(select(Prediction.page_id, Prediction.pass_name, Prediction.label)
                         .where(Prediction.page_id.in_(list(ids)))).all()
    labels = {(pid, pass_name): label for pid, pass_name, label in rows}
    return sum(labels[(i, "early")] != labels[(i, "full")] for i in ids) / len(ids)


def test_tune_apply_brings_live_disagreement_back_inside_the_budget(
        factory, tmp_path, tiny_bundle, tune_cli) -> None:
    model = load_bundle(tiny_bundle)
    version = str(model.version)
    loose = MaxSoftmax.global_threshold(model.num_stages, LOOSE).to_json()
    loose_version = policy_version(version, loose)
    with session_scope(factory) as s:  # the policy in force: too loose
        add_policy(s, NewPolicy(version, loose_version, loose, "test", notes="too loose"))
    source = stored_policies(lambda: factory)
    # Two runtimes already serving before the tune, polling the store at every classify.
    drain = ClassifyRuntime(model, BatcherOptions(max_batch=8),
                            policies=PolicyFeed(source, every_s=0.0))
    threaded = ClassifyRuntime(model, BatcherOptions(max_batch=8, max_delay_ms=5),
                               policies=PolicyFeed(source, every_s=0.0)).start()
    try:
        before_ids = classify(factory, tmp_path / "a", drain, scribbled_contents(PAGES, 0),
                              "before")
        early_threaded = classify(factory, tmp_path / "a", threaded,
                                  scribbled_contents(8, 7), "threaded-before")
        assert {r.policy_version for r in early_rows(factory, before_ids + early_threaded)} == {
            loose_version}
        measured_before = disagreement(factory, before_ids)
        assert 0.03 <= measured_before <= 0.10, measured_before

        shown = tune_cli("--model", str(tiny_bundle), "--budget", str(BUDGET_POINTS), "--json")
        assert shown.exit_code == 0, shown.output
        report = json.loads(shown.stdout)
        with session_scope(factory) as s:  # a report only: nothing stored
            assert latest_policy(s, version).policy_version == loose_version
        check_report(report, loose_version, measured_before, len(before_ids) + 8)

        new_version = apply_proposal(factory, tune_cli, tiny_bundle, report, loose_version)

        fresh = scribbled_contents(PAGES, 1)
        after_ids = classify(factory, tmp_path / "b", drain, fresh[: PAGES // 2], "after-drain")
        after_ids += classify(factory, tmp_path / "b", threaded, fresh[PAGES // 2:],
                              "after-threaded")
    finally:
        threaded.stop()
    rows = early_rows(factory, after_ids)
    assert {r.policy_version for r in rows} == {new_version}
    thresholds = report["proposed"]["thresholds"]
    for r in rows:  # decided with the new thresholds: the first exit reaching its threshold
        first = next(k for k, c in enumerate(r.trail)
                     if np.float32(c) >= np.float32(thresholds[k]))
        assert r.exit_stage == first
    measured_after = disagreement(factory, after_ids)
    assert measured_after <= BUDGET_POINTS / 100 < measured_before
    with session_scope(factory) as s:  # audit loss per policy version says the same
        groups = {g["version"]: g for g in audit_loss.loss(s, by="version")["groups"]}
    assert groups[new_version]["estimate"] == pytest.approx(measured_after)
    assert groups[new_version]["pages"] == PAGES


def apply_proposal(factory: Any, tune_cli: Any, bundle: Path, report: dict[str, Any],
                   loose_version: str) -> str:
    """`tune --apply`: the proposal stored as the newest policy, after the loose one."""
    applied = tune_cli("--model", str(bundle), "--budget", str(BUDGET_POINTS), "--apply",
                       "--notes", "e2e")
    assert applied.exit_code == 0, applied.output
    assert "applied: policy 2 stored" in applied.stdout
    new_version = report["proposed"]["policy_version"]
    version = report["model_version"]
    with session_scope(factory) as s:
        stored = latest_policy(s, version)
        assert (stored.policy_version, stored.spec) == (new_version, report["proposed"]["policy"])
        assert (stored.notes, stored.record["budget"]) == ("e2e", BUDGET_POINTS / 100)
        assert [p.policy_version for p in policy_history(s, version)] == [loose_version,
                                                                           new_version]
    return new_version


def check_report(report: dict[str, Any], loose_version: str, measured: float,
                 pages: int) -> None:
    """Before: the loose policy in force, its replay equal to what the store measured; after:
    stricter thresholds whose bound holds the budget, at more layers."""
    assert (report["pages"], report["budget"], report["delta"]) == (pages, 0.03, 0.1)
    current, proposed = report["current"], report["proposed"]
    assert (current["policy_version"], current["source"]) == (loose_version,
                                                             "store (policy 1)")
    assert current["loss"] == current["observed"]  # the replay gives the stored answers back
    assert current["loss"]["lower"] <= measured <= current["loss"]["upper"]
    assert current["disagreement_ucb"] > 0.03
    assert proposed["disagreement_ucb"] <= 0.03
    assert proposed["loss"]["estimate"] < current["loss"]["estimate"]
    assert proposed["thresholds"][0] > LOOSE and proposed["thresholds"][-1] == 0.0
    assert current["mean_layers"] <= proposed["mean_layers"] <= 4
    assert report["path"]["passed"] >= 1 and "applied" not in report


# -- the tuner on stored rows written directly (no model run): exact figures, refusals, CLI ---


def seed_sample(factory: Any, model: Any, rows: Sequence[tuple[list[float], list[int]]],
                **extra: Any) -> list[int]:
    """Audit-sampled pages with early and full rows as the steps write them: rows[i] = (every
    exit's confidence, every exit's label index); the early answer is the bundle policy's."""
    names, version = model.label_names, str(model.version)
    pv = policy_version(version, model.policy_spec)
    records = []
    with session_scope(factory) as s:
        doc_id, _ = repo.register_document(s, "file:///sample/doc.pdf", etag="x")
        ids = repo.upsert_pages(s, doc_id, [repo.PageRecord(i + 1, "text_layer", 1, "k", 1, 1)
                                            for i in range(len(rows))])
        for pid, (conf, labels) in zip(ids, rows, strict=True):
            k = next(k for k, c in enumerate(conf) if c >= model.thresholds[k])
            common = dict(page_id=pid, model_version=version, exit_layer=0, latency_ms=1.0,
                          policy_version=pv, full_depth_reason="audit_sample",
                          audit_sample=extra.get("audit_sample", True))
            records.append(repo.PredictionRecord(
                pass_name="early", label=names[labels[k]], confidence=conf[k], exit_stage=k,
                trail=conf[: k + 1], **common))
            records.append(repo.PredictionRecord(
                pass_name="full", label=names[labels[-1]], confidence=conf[-1],
                exit_stage=len(conf) - 1, trail=conf,
                exit_answers=[(names[lab], c) for lab, c in zip(labels, conf, strict=True)],
                **common))
        repo.record_predictions(s, records)
    return ids


def synthetic_rows(n: int, stages: int, seed: int) -> list[tuple[list[float], list[int]]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        conf = np.sort(rng.uniform(0.5, 1.0, stages)).astype(np.float32)
        full = int(rng.integers(0, 6))
        labels = [full if rng.random() < c ** 4 else int(rng.integers(0, 6)) for c in conf]
        labels[-1] = full
        rows.append(([float(c) for c in conf], labels))
    return rows


@pytest.fixture(scope="module")
def tiny(tiny_bundle: Path) -> Any:
    return load_bundle(tiny_bundle)


def test_tune_report_is_the_search_on_the_stored_sample(factory, tiny, tiny_bundle,
                                                        tune_cli) -> None:
    from classifier.calibrate import stage_cost_layers
    from classifier.thresholds import ExitAnswers, ThresholdRule, replay, ucb_search

    rows = synthetic_rows(300, tiny.num_stages, 0)
    seed_sample(factory, tiny, rows)
    seed_sample_noise(factory, tiny)
    res = tune_cli("--model", str(tiny_bundle), "--budget", "5", "--delta", "0.2", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    conf = np.array([c for c, _ in rows], dtype=np.float32)
    labels = np.array([lab for _, lab in rows])
    answers = ExitAnswers(conf, labels, labels[:, -1])
    costs = stage_cost_layers(tiny)
    found = ucb_search(answers, costs, ThresholdRule(0.05, "ucb", 0.2))
    proposed, current = report["proposed"], report["current"]
    assert report["pages"] == 300 and proposed["thresholds"] == found.thresholds
    assert proposed["loss"]["pages"] == 300
    assert proposed["loss"]["differ"] == found.replay.disagreements
    assert proposed["flops_ratio"] == pytest.approx(found.replay.mean_cost)
    layers = np.asarray(tiny.exit_layers)[found.replay.exit_stage].mean()
    assert proposed["mean_layers"] == pytest.approx(layers)
    bundle_run = replay(answers, tiny.thresholds, costs)
    assert current["source"] == "bundle" and current["thresholds"] == tiny.thresholds
    assert current["loss"]["differ"] == bundle_run.disagreements == current["observed"]["differ"]
    text = tune_cli("--model", str(tiny_bundle), "--budget", "5", "--delta", "0.2")
    assert text.exit_code == 0 and "estimated loss" in text.stdout and "mean layers" in text.stdout
    assert "current:" in text.stdout and "proposed:" in text.stdout


def seed_sample_noise(factory: Any, tiny: Any) -> None:
    """Rows the tuner must leave out: another model version's pages, and pages the audit coin
    did not draw (re-routed for low confidence only)."""
    with session_scope(factory) as s:
        doc_id, _ = repo.register_document(s, "file:///noise/doc.pdf", etag="y")
        a, b = repo.upsert_pages(s, doc_id, [repo.PageRecord(i, "text_layer", 1, "k", 1, 1)
                                             for i in (1, 2)])
        answers = [(tiny.label_names[0], 1.0)] * tiny.num_stages
        rows = []
        for pid, version, drawn in ((a, "other-model", True), (b, str(tiny.version), False)):
            for pass_name in ("early", "full"):
                rows.append(repo.PredictionRecord(
                    pid, version, pass_name, tiny.label_names[1], 0.9, 0, 0, [0.9], 1.0,
                    audit_sample=drawn, full_depth_reason="low_confidence",
                    exit_answers=answers if pass_name == "full" else None))
        repo.record_predictions(s, rows)


def test_tune_refuses_a_sample_too_small_or_where_nothing_passes(factory, tiny, tiny_bundle,
                                                                 tune_cli) -> None:
    seed_sample(factory, tiny, synthetic_rows(40, tiny.num_stages, 1))
    res = tune_cli("--model", str(tiny_bundle), "--budget", "3", "--apply")
    assert res.exit_code == 1 and res.stdout == ""
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("refused: too few audit-sampled pages to decide: 40") and "76" in line
    # every exit sure and wrong until the last: even the strictest threshold fails
    wrong = [([1.0] * (tiny.num_stages - 1) + [0.9], [0] * (tiny.num_stages - 1) + [1])] * 200
    seed_more(factory, tiny, wrong)
    res = tune_cli("--model", str(tiny_bundle), "--budget", "3", "--apply", "--json")
    assert res.exit_code == 1 and res.stdout == ""
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("refused: nothing passes") and "no policy proposed" in line
    with session_scope(factory) as s:
        assert latest_policy(s, str(tiny.version)) is None  # nothing stored


def seed_more(factory: Any, tiny: Any, rows: Sequence[tuple[list[float], list[int]]]) -> None:
    with session_scope(factory) as s:
        s.execute(Prediction.__table__.delete())
    seed_sample(factory, tiny, rows)


def test_tune_arguments_and_applying_what_is_already_in_force(factory, tiny, tiny_bundle,
                                                             tune_cli) -> None:
    for args, message in (
        (["--delta", "1.5"], "--delta must be in (0, 1)"),
        (["--budget", "0"], "--budget must be in (0, 100] points"),
        (["--since", "yesterday"], "--since 'yesterday': not a date"),
        (["--model-version", "nope"], "--model-version 'nope': the bundle is"),
        (["--model", "/nonexistent/bundle"], "no such model folder"),
    ):
        res = tune_cli("--model", str(tiny_bundle), *args) if "--model" not in args else \
            tune_cli(*args)
        assert res.exit_code == 2, (args, res.output)
        assert res.stderr.strip().startswith("error: ") and message in res.stderr, res.stderr
    seed_sample(factory, tiny, synthetic_rows(300, tiny.num_stages, 2))
    # the budget and delta default to those the policy in force was chosen under
    res = tune_cli("--model", str(tiny_bundle), "--apply", "--json")
    assert res.exit_code == 1  # the bundle's: 0.5 points, 300 pages cannot show it
    with session_scope(factory) as s:
        add_policy(s, NewPolicy(str(tiny.version), policy_version(tiny.version,
                                                                  tiny.policy_spec),
                                tiny.policy_spec, "test", record={"budget": 0.06, "delta": 0.2}))
    hostile = "x'); DROP TABLE policies; -- \u202e<b>"
    first = tune_cli("--model", str(tiny_bundle), "--apply", "--json", "--notes", hostile)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert (report["budget"], report["delta"]) == (0.06, 0.2)
    assert report["applied"] == {"stored": True, "policy_id": 2}
    again = tune_cli("--model", str(tiny_bundle), "--apply", "--since", "2000-01-01", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["applied"] == {"stored": False, "reason": "already in force"}
    with session_scope(factory) as s:
        history = policy_history(s, str(tiny.version))
        assert len(history) == 2 and history[-1].notes == hostile  # stored as given
    future = tune_cli("--model", str(tiny_bundle), "--since", "2999-01-01")
    assert future.exit_code == 1 and "too few audit-sampled pages to decide: 0" in future.stderr


def test_the_wiring_feeds_the_runtime_from_the_store(factory, tiny, tiny_bundle,
                                                     monkeypatch) -> None:
    """What `run` (once) and the workers (every DOCTRIAGE_POLICY_POLL_S) are given: the
    store's newest policy of the bundle's version decides the early answers."""
    from doctriage import wiring
    from doctriage.settings import get_settings

    monkeypatch.setenv("DOCTRIAGE_POLICY_POLL_S", "0")
    monkeypatch.setenv("DOCTRIAGE_MALLOC_TUNING", "false")
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.policy_poll_s == 0.0
    full_depth = {"name": "full_depth"}
    with session_scope(factory) as s:
        add_policy(s, NewPolicy(str(tiny.version), policy_version(tiny.version, full_depth),
                                full_depth, "test"))
    pages = scribbled_contents(6, 9)
    once = wiring.classify_runtime(settings, tiny_bundle, policies=wiring.policy_feed(
        settings, lambda: factory, once=True))
    polled = wiring.classify_runtime(settings, tiny_bundle, policies=wiring.policy_feed(
        settings, lambda: factory))
    for runtime in (once, polled):
        answers = runtime.classify(pages)
        assert {a.decided_by for a in answers} == {policy_version(tiny.version, full_depth)}
        assert {a.exit_stage for a in answers} == {tiny.num_stages - 1}
    loose = MaxSoftmax.global_threshold(tiny.num_stages, 0.0).to_json()
    with session_scope(factory) as s:
        add_policy(s, NewPolicy(str(tiny.version), policy_version(tiny.version, loose), loose,
                                "test"))
    assert {a.exit_stage for a in polled.classify(pages)} == {0}  # polled: taken up
    assert {a.exit_stage for a in once.classify(pages)} == {tiny.num_stages - 1}  # read once
    get_settings.cache_clear()
