"""The default bundle that ships in doctriage/default_bundle: made by the project's own recipe,
small enough for git, and as accurate on the README's demo corpus as its metadata says."""

from __future__ import annotations

import json

import pytest

from doctriage import default_model
from doctriage.settings import Settings

BUNDLE = default_model.SHIPPED_BUNDLE


@pytest.fixture(scope="module")
def exits() -> dict:
    if not default_model.bundle_ready(BUNDLE):
        pytest.fail(f"no default bundle in {BUNDLE}: build it ({default_model.BUILD_COMMAND})")
    return json.loads((BUNDLE / "exits.json").read_text())


def test_shipped_bundle_records_the_current_recipe_trained_to_its_last_epoch(exits):
    meta = exits["metadata"]
    assert meta["recipe"] == default_model.recipe(), "the recipe changed: rebuild the bundle"
    assert meta["corpus"]["kind"] == "synthetic"
    assert meta["training"]["epochs_done"] == default_model.TRAIN_EPOCHS
    assert meta["training"]["stopped_by_max_minutes"] is False


def test_shipped_bundle_is_small_enough_for_git():
    files = [p for p in BUNDLE.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    assert total < 6 * 1024 * 1024, f"{total / 2**20:.1f} MiB"
    for file in files:  # no file over 5 MiB in the repository
        assert file.stat().st_size < 5 * 1024 * 1024, file
    assert not list(BUNDLE.glob("*.building")) and not (BUNDLE / "checkpoint").exists()


def test_shipped_bundle_is_the_default_and_loads(tmp_path):
    from classifier.bundle import load_bundle

    path = default_model.ensure_default_bundle(Settings(home=tmp_path))
    assert path == BUNDLE
    model = load_bundle(path)
    assert len(model.label_names) == 16 and model.version.startswith("small-")


def test_shipped_bundle_reaches_its_recorded_accuracy_on_the_demo_corpus(exits, tmp_path):
    """Re-measured here, not read back: >= 90% at full depth on `synth --per-class 2 --seed 7`."""
    recorded = exits["metadata"]["demo_accuracy"]
    measured = default_model.demo_accuracy(BUNDLE, Settings(home=tmp_path))
    assert measured["pages"] == recorded["pages"]
    assert measured["full_depth"] >= 0.90
    assert measured["full_depth"] == pytest.approx(recorded["full_depth"], abs=0.03)
    assert measured["early_exit"] == pytest.approx(recorded["early_exit"], abs=0.03)
