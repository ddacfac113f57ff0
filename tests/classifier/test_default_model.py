"""The default bundle: built once from the synthetic corpus, then reused."""

from __future__ import annotations

import functools

from classifier.bundle import load_bundle
from classifier.predict import predict_pages
from doctriage import default_model
from doctriage.settings import Settings


def _training_metadata(model, *, stopped: bool) -> None:
    model.metadata = {"training": {"epochs_done": 1, "stopped_by_max_minutes": stopped}}


def test_without_a_shipped_bundle_a_finished_home_bundle_is_reused(tmp_path, monkeypatch, model):
    from classifier.bundle import save_bundle

    monkeypatch.setattr(default_model, "SHIPPED_BUNDLE", tmp_path / "not-shipped")
    settings = Settings(home=tmp_path)
    _training_metadata(model, stopped=False)
    save_bundle(model, settings.default_model_dir)

    def fail(*_a, **_k):
        raise AssertionError("rebuilt an existing bundle")

    monkeypatch.setattr(default_model, "build_default_bundle", fail)
    assert default_model.ensure_default_bundle(settings) == settings.default_model_dir


def test_a_home_bundle_whose_training_was_cut_short_is_never_the_default(
    tmp_path, monkeypatch, model
):
    """The first round cached a bundle stopped by its time cap as the default for good."""
    from classifier.bundle import save_bundle

    monkeypatch.setattr(default_model, "SHIPPED_BUNDLE", tmp_path / "not-shipped")
    settings = Settings(home=tmp_path)
    _training_metadata(model, stopped=True)
    save_bundle(model, settings.default_model_dir)
    rebuilt = []
    monkeypatch.setattr(
        default_model, "build_default_bundle", lambda *a, **k: rebuilt.append(a[1])
    )
    default_model.ensure_default_bundle(settings, log=lambda _m: None)
    assert rebuilt == [settings.default_model_dir]


def test_default_bundle_builds_from_the_synthetic_corpus(tmp_path, monkeypatch):
    """The real recipe at a reduced size (2 documents per class, 2 epochs of the tiny config)."""
    from pipelines.dataset import PageCache, read_documents

    monkeypatch.setattr(default_model, "SHIPPED_BUNDLE", tmp_path / "not-shipped")
    settings = Settings(home=tmp_path)
    real_build = default_model.build_default_bundle
    monkeypatch.setattr(
        default_model,
        "build_default_bundle",
        functools.partial(real_build, plan=default_model.BuildPlan(
            per_class=2, epochs=2, config="tiny", measure_demo=False)),
    )
    path = default_model.ensure_default_bundle(settings, progress=False)
    model = load_bundle(path)
    assert len(model.label_names) == 16
    assert not (path / "checkpoint").exists()
    assert model.metadata["recipe"] == default_model.recipe(2, 2, "tiny")
    assert model.metadata["training"]["stopped_by_max_minutes"] is False
    corpus = next((tmp_path / "cache").glob("default-corpus-*"))
    cache = PageCache(tmp_path / "cache" / "pages", model.preprocessing.image_size)
    pages, _ = cache.load(read_documents(corpus)[:3])
    preds = predict_pages(model, pages)
    assert len(preds) == len(pages) and all(p.label in model.label_names for p in preds)
