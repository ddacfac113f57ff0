"""The full-depth routing the steps record, and `audit loss` against the truth: pages run through
the real classify and full-depth steps (tiny bundle, real SQLite and PostgreSQL stores) under an
exit policy that is too loose, with the disagreement known from running both passes directly."""

from __future__ import annotations

from pathlib import Path

import pytest
from modelkit import scribbled_contents
from sqlalchemy import select

from classifier.bundle import load_bundle
from classifier.policy import MaxSoftmax, policy_version
from classifier.predict import BatcherOptions, ClassifyRuntime, predict_pages
from db import audit_loss
from db import repository as repo
from db.models import Prediction
from db.session import session_scope
from db.states import PageState
from pipelines.artifacts import LocalArtifactStore, encode_page, page_key
from pipelines.page_content import Page as PageContent
from workers import steps

PAGES = 60


def _contents(n: int, seed: int = 0) -> list[PageContent]:
    return scribbled_contents(n, seed)


@pytest.fixture(scope="module")
def loose(tiny_bundle: Path):
    """The tiny model with an exit policy that is too loose: every page leaves at stage 0."""
    model = load_bundle(tiny_bundle)
    model.policy_spec = MaxSoftmax.global_threshold(model.num_stages, 0.0).to_json()
    return model


@pytest.fixture(scope="module")
def truth(loose) -> list[tuple[str, str]]:
    """(early label, full-depth label) of each page, from the two passes run directly."""
    pages = _contents(PAGES)
    early = predict_pages(loose, pages, batch_size=8,
                          policy=MaxSoftmax.global_threshold(loose.num_stages, 0.0))
    full = predict_pages(loose, pages, early_exit=False, batch_size=8)
    return [(e.label, f.label) for e, f in zip(early, full, strict=True)]


def _run(factory, tmp_path: Path, model, reroute: steps.RerouteOptions) -> list[int]:
    """PAGES pages (one document) through classify and full depth; their page ids."""
    store = LocalArtifactStore(tmp_path / "artifacts")
    ctx = steps.StepContext(sessions=factory, artifacts=store, reroute=reroute)
    with session_scope(factory) as s:
        doc_id, _ = repo.register_document(s, "s3://bucket/drift/doc.pdf", etag="e1")
        rows = []
        for page in _contents(PAGES):
            key = store.put(page_key(doc_id, page.number), encode_page(page))
            rows.append(repo.PageRecord(page.number, "text_layer", len(page.words), key, 170, 220))
        ids = repo.upsert_pages(s, doc_id, rows)
    runtime = ClassifyRuntime(model, BatcherOptions(max_batch=8))
    result = steps.classify_pages(ctx, runtime, ids)
    steps.full_depth_pages(ctx, runtime, result.rerouted)
    return ids


def test_loss_with_every_page_sampled_is_the_true_disagreement(factory, tmp_path, loose,
                                                               truth) -> None:
    differ = sum(e != f for e, f in truth)
    assert 0 < differ < PAGES, "the loose policy should change some answers, not all"
    _run(factory, tmp_path, loose, steps.RerouteOptions(reroute_below=0.0, audit_fraction=1.0))
    with session_scope(factory) as s:
        result = audit_loss.loss(s, by="version")
        full = s.execute(select(Prediction).where(Prediction.pass_name == "full")
                         .order_by(Prediction.page_id)).scalars().all()
        early = s.execute(select(Prediction).where(Prediction.pass_name == "early")
                          .order_by(Prediction.page_id)).scalars().all()
    t = result["total"]
    assert (t["pages"], t["differ"]) == (PAGES, differ)
    assert t["lower"] <= differ / PAGES <= t["upper"]
    version = policy_version(loose.version, loose.policy_spec)
    assert [(g["version"], g["pages"]) for g in result["groups"]] == [(version, PAGES)]
    # What the tuner needs: every exit's answer on the full row; the policy on both rows.
    assert [(e.label, f.label) for e, f in zip(early, full, strict=True)] == truth
    for e, f in zip(early, full, strict=True):
        assert (f.full_depth_reason, f.audit_sample, e.audit_sample) == ("audit_sample", True, True)
        assert len(f.exit_answers) == loose.num_stages
        assert f.exit_answers[0][0] == e.label and f.exit_answers[-1][0] == f.label
        assert f.exit_answers[-1][1] == pytest.approx(f.confidence)
        assert e.policy_version == f.policy_version == version and e.exit_answers is None


def test_a_two_percent_style_sample_covers_the_truth(factory, tmp_path, loose, truth) -> None:
    """Half the pages drawn (seeded): the estimate is the drawn pages' disagreement, and its
    interval covers the disagreement over all pages."""
    reroute = steps.RerouteOptions(reroute_below=0.0, audit_fraction=0.5, seed=3)
    ids = _run(factory, tmp_path, loose, reroute)
    drawn = [i for i, pid in enumerate(ids) if steps.audit_pick(pid, 3, 0.5)]
    with session_scope(factory) as s:
        t = audit_loss.loss(s)["total"]
    assert t["pages"] == len(drawn) and 0 < len(drawn) < PAGES
    assert t["differ"] == sum(truth[i][0] != truth[i][1] for i in drawn)
    true_share = sum(e != f for e, f in truth) / PAGES
    assert t["lower"] <= true_share <= t["upper"]


def test_every_full_depth_pass_records_why(factory, tmp_path, tiny_bundle) -> None:
    """Low confidence, the audit draw (also when the page was low-confidence too) and an
    operator's re-run each leave their reason on the full row."""
    model = load_bundle(tiny_bundle)
    confidences = sorted(p.confidence for p in predict_pages(model, _contents(PAGES)))
    bar = confidences[PAGES // 2]  # half the pages are low-confidence
    reroute = steps.RerouteOptions(reroute_below=bar, audit_fraction=0.3, seed=5)
    ids = _run(factory, tmp_path, model, reroute)
    with session_scope(factory) as s:
        rows = {(p.page_id, p.pass_name): p for p in s.execute(select(Prediction)).scalars()}
    reasons = {}
    for pid in ids:
        early, full = rows[(pid, "early")], rows.get((pid, "full"))
        drawn, low = steps.audit_pick(pid, 5, 0.3), early.confidence < bar
        want = "low_confidence" if low else "audit_sample" if drawn else None
        assert (early.full_depth_reason, early.audit_sample) == (want, drawn)
        assert (full is not None) == (want is not None)
        if full is not None:
            assert (full.full_depth_reason, full.audit_sample) == (want, drawn)
        reasons[(want, drawn)] = reasons.get((want, drawn), 0) + 1
    # every kind occurs on these 60 pages, the both-at-once one included
    assert set(reasons) == {(None, False), ("low_confidence", False), ("low_confidence", True),
                            ("audit_sample", True)}, reasons
    # An operator sends a page that was answered early to full depth (as backlog does).
    manual = next(pid for pid in ids if (pid, "full") not in rows)
    with session_scope(factory) as s:
        repo.mark_pages(s, [manual], PageState.REROUTED, only_from=(PageState.DONE,))
    ctx = steps.StepContext(sessions=factory, artifacts=LocalArtifactStore(tmp_path / "artifacts"),
                            reroute=reroute)
    steps.full_depth_pages(ctx, ClassifyRuntime(model, BatcherOptions(max_batch=8)), [manual])
    with session_scope(factory) as s:
        full = s.execute(select(Prediction).where(Prediction.page_id == manual,
                                                  Prediction.pass_name == "full")).scalar_one()
        assert (full.full_depth_reason, full.audit_sample) == ("manual", False)
        # not in the audit sample: the estimate does not move
        assert audit_loss.loss(s)["total"]["pages"] == reasons[("low_confidence", True)] + reasons[
            ("audit_sample", True)]
