"""The stage batcher with a real (tiny) model gives the classifier's own answers."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

import pytest
from modelkit import scribbled_page
from racekit import run_at_once

from classifier.bundle import load_bundle
from classifier.inputs import PageInput
from classifier.policy import MaxSoftmax
from classifier.predict import BatcherOptions, ClassifyRuntime, predict_pages


def _pages(n: int, seed: int = 0) -> list[PageInput]:
    rng = random.Random(seed)
    vocab = ["agreement", "invoice", "total", "receipt", "resume", "skills", "form", "date",
             "abstract", "party"]
    pages = []
    for _ in range(n):
        words, boxes, img = scribbled_page(rng, vocab, (1, 40))
        pages.append(PageInput(words, boxes, img))
    return pages


@pytest.fixture(scope="module")
def model(tiny_bundle: Path):
    return load_bundle(tiny_bundle)


@pytest.mark.parametrize("early_exit", [True, False])
def test_batcher_matches_predict_pages(model, early_exit: bool) -> None:
    pages = _pages(40)
    want = predict_pages(model, pages, early_exit=early_exit, batch_size=8)
    runtime = ClassifyRuntime(model, BatcherOptions(max_batch=8))
    got = runtime.classify(pages, early_exit=early_exit)
    if not early_exit:
        # The served full pass runs every exit head on the way: its trail (and the label at
        # each exit) is a never-exiting policy's, its answer the full-depth one.
        assert [g.confidence for g in got] == pytest.approx([w.confidence for w in want], abs=1e-4)
        assert all(len(g.trail) == len(g.trail_labels) == model.num_stages for g in got)
        assert all(g.trail_labels[-1] == g.label for g in got)
        never = MaxSoftmax.global_threshold(model.num_stages, 2.0)
        want = predict_pages(model, pages, batch_size=8, policy=never)
        assert [g.trail_labels for g in got] == [w.trail_labels for w in want]
    assert [g.label for g in got] == [w.label for w in want]
    assert [g.exit_stage for g in got] == [w.exit_stage for w in want]
    assert [g.exit_layer for g in got] == [w.exit_layer for w in want]
    for g, w in zip(got, want, strict=True):
        assert g.confidence == pytest.approx(w.confidence, abs=1e-4)
        assert list(g.trail) == pytest.approx(w.trail, abs=1e-4)
        assert g.probs == pytest.approx(w.probs, abs=1e-4)
        assert g.latency_ms is not None and g.latency_ms >= 0  # stored with the prediction
    stages = {g.exit_stage for g in got}
    if early_exit:
        assert len(stages) > 1, "the tiny model should spread exits over several stages"
    else:
        assert stages == {model.num_stages - 1}
    stats = runtime.stats()["early" if early_exit else "full"]
    assert sum(s["pages_exited"] for s in stats) == len(pages)


def test_threaded_runtime_serves_concurrent_callers(model) -> None:
    pages = _pages(48, seed=3)
    want = [p.label for p in predict_pages(model, pages, batch_size=16)]
    runtime = ClassifyRuntime(model, BatcherOptions(max_batch=16, max_delay_ms=30)).start()

    def call(part: int) -> tuple[int, list[str]]:
        return part, [a.label for a in runtime.classify(pages[part * 12 : part * 12 + 12])]

    try:
        results = dict(run_at_once([partial(call, i) for i in range(4)]))
    finally:
        runtime.stop()
    assert [lab for i in range(4) for lab in results[i]] == want
    # the four callers' pages were batched together at stage 0
    assert max(size for stage, size in runtime.early.batch_log if stage == 0) > 12


def test_attention_setting_reaches_the_served_model(tmp_path, monkeypatch):
    """DOCTRIAGE_ATTENTION=fused: the worker's model runs the fused encoder path; eager is the
    default (the bit-exact reference)."""
    from doctriage import wiring
    from doctriage.settings import Settings
    from tests.modelkit import build_tiny_bundle

    bundle = build_tiny_bundle(tmp_path / "bundle")
    assert wiring.load_model(Settings(home=tmp_path, model_dir=bundle)).attention_impl == "eager"
    monkeypatch.setenv("DOCTRIAGE_ATTENTION", "fused")
    fused = wiring.load_model(Settings(home=tmp_path, model_dir=bundle))
    assert fused.attention_impl == "fused"
