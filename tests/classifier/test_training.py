"""A tiny end-to-end run: train (joint and two-stage), resume, calibrate, save, evaluate."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator

import pytest
import torch

from classifier.bundle import load_bundle, save_bundle
from classifier.calibrate import calibrate_model
from classifier.evaluation import evaluate
from classifier.thresholds import ThresholdRule
from classifier.training import TrainOptions, all_logits, train


def test_joint_training_learns_and_resumes_exactly(make_model, page_factory, tmp_path):
    pages, labels = page_factory(48, seed=3)
    val_pages, val_labels = page_factory(18, seed=4)
    opts = TrainOptions(epochs=4, batch_size=8, lr=2e-3, seed=0, progress=False)

    straight = make_model()
    x, xv = straight.encode(pages), straight.encode(val_pages)
    res = train(straight, x, labels, xv, val_labels, opts, checkpoint_dir=tmp_path / "a")
    assert res.epochs_done == 4 and not res.stopped_early
    final_acc = res.history[-1]["val_accuracy"][-1]
    assert final_acc >= 0.9, res.history  # three easy classes

    # stop after 2 epochs, then resume to 4: same weights as the uninterrupted run
    part = make_model()
    half = TrainOptions(**{**opts.__dict__})
    half.epochs = 4
    with _killed_after_epochs(2):
        train(part, x, labels, xv, val_labels, half, checkpoint_dir=tmp_path / "b")
    state = json.loads((tmp_path / "b" / "train_state.json").read_text())
    assert state["epochs_done"] == 2
    resumed = make_model(seed=123)  # different init: everything must come from the checkpoint
    res2 = train(
        resumed, x, labels, xv, val_labels, half, checkpoint_dir=tmp_path / "b", resume=True
    )
    assert res2.epochs_done == 4
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=k)
    assert not list((tmp_path / "b").glob("*.pt"))


@contextlib.contextmanager
def _killed_after_epochs(stop_after: int) -> Iterator[None]:
    """A train() inside stops after `stop_after` epochs, as if the process had been killed."""
    import classifier.training as tr

    original = tr.phase_of

    def limited(epoch, options):  # type: ignore[no-untyped-def]
        if epoch >= stop_after:
            raise KeyboardInterrupt
        return original(epoch, options)

    tr.phase_of = limited
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        tr.phase_of = original


def test_two_stage_freezes_backbone_then_calibrates_and_evaluates(
    make_model, page_factory, tmp_path
):
    pages, labels = page_factory(36, seed=5)
    val_pages, val_labels = page_factory(18, seed=6)
    model = make_model("every_other")
    x, xv = model.encode(pages), model.encode(val_pages)
    opts = TrainOptions(strategy="two-stage", epochs=4, batch_size=8, lr=2e-3, progress=False)
    seen = {}

    def snapshot(msg):
        rec = json.loads(msg)
        seen[rec["epoch"]] = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        seen[f"{rec['epoch']}-final"] = {
            k: v.clone() for k, v in model.ramps[-1].state_dict().items()
        }

    res = train(model, x, labels, xv, val_labels, opts, log=snapshot)
    assert [h["phase"] for h in res.history] == ["backbone", "backbone", "exits", "exits"]
    for k, v in seen[2].items():  # the exits phase never touches the backbone or final head
        assert torch.equal(v, seen[4][k]), k
    for k, v in seen["2-final"].items():
        assert torch.equal(v, seen["4-final"][k]), k

    # the point estimate: 18 validation pages are too few for the default bound to allow early
    # exit, and this test follows the early-exit policy through the bundle and evaluate
    report = calibrate_model(model, all_logits(model, xv), val_labels,
                             ThresholdRule(0.005, "point"))
    assert len(report["exits"]) == model.num_stages
    assert report["early_exit_val_accuracy"] >= report["full_depth_val_accuracy"] - 0.005
    save_bundle(model, tmp_path / "bundle")
    loaded = load_bundle(tmp_path / "bundle")
    assert loaded.thresholds == model.thresholds
    out = evaluate(
        loaded,
        loaded.encode(val_pages),
        val_labels,
        batch_size=4,
        out_dir=tmp_path / "eval",
        timing_rounds=1,
    )
    assert out["pages"] == 18
    assert {"accuracy"} <= set(out["full_depth"])
    assert all(
        {"stage", "layer", "accuracy", "ece_raw", "ece_calibrated"} <= set(e) for e in out["exits"]
    )
    assert {"policy", "accuracy", "mean_layers", "flops_ratio", "speedup_wall"} <= set(
        out["early_exit"]
    )
    assert 0 < out["early_exit"]["flops_ratio"] <= 1.0
    assert all(0.0 <= e["gate_accuracy"] <= 1.0 for e in out["exits"])
    assert (tmp_path / "eval" / "tradeoff.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "reliability.png").stat().st_size > 1000


def test_max_minutes_budget_stops_training(make_model, page_factory):
    pages, labels = page_factory(24, seed=7)
    model = make_model()
    res = train(
        model,
        model.encode(pages),
        labels,
        None,
        None,
        TrainOptions(epochs=50, batch_size=4, max_minutes=0.0, progress=False),
    )
    assert res.stopped_early and res.epochs_done == 0


def test_bf16_training_learns_and_auto_follows_the_cpu(make_model, page_factory, tmp_path,
                                                       monkeypatch):
    from classifier import training

    pages, labels = page_factory(48, seed=3)
    val_pages, val_labels = page_factory(18, seed=4)
    model = make_model()
    x, xv = model.encode(pages), model.encode(val_pages)
    opts = TrainOptions(epochs=4, batch_size=8, lr=2e-3, seed=0, progress=False,
                        precision="bf16")
    res = train(model, x, labels, xv, val_labels, opts, checkpoint_dir=tmp_path / "bf16")
    assert res.history[-1]["val_accuracy"][-1] >= 0.9, res.history  # three easy classes
    assert next(model.parameters()).dtype == torch.float32  # only the forward ran in bf16

    def cpu_flags(text: str):
        real_open = open
        return lambda path, *a, **k: (io.StringIO(text) if path == "/proc/cpuinfo"
                                      else real_open(path, *a, **k))

    monkeypatch.setattr("builtins.open", cpu_flags("flags : fpu avx512f amx_bf16 amx_tile"))
    assert training.resolve_precision("auto") == "bf16"
    monkeypatch.setattr("builtins.open", cpu_flags("flags : fpu sse2 avx2"))
    assert training.resolve_precision("auto") == "fp32"
    assert training.resolve_precision("fp32") == "fp32"
    with pytest.raises(ValueError, match="precision"):
        training.resolve_precision("fp8")
