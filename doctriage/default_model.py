"""The default model bundle, made by the project's own code when no model is given.

No weights can be downloaded, so on first use `ensure_default_bundle` writes a small synthetic
corpus (pipelines.synth: 16 RVL-CDIP-style classes, few scanned documents so OCR stays cheap),
trains the "small" configuration on it for a few minutes, calibrates it and saves the bundle
under `settings.default_model_dir`. Later calls return the existing bundle at once."""

from __future__ import annotations

import fcntl
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from doctriage.options import ingest_options
from doctriage.settings import Settings

# Sized to finish in a few minutes on 2 CPU cores (measured: see the training report in the
# bundle, metadata.training.train_seconds).
CORPUS_PER_CLASS = 24
CORPUS_SEED = 0
CORPUS_SCANNED_FRACTION = 0.05
TRAIN_EPOCHS = 6
# A safety net, not the budget: the epochs decide the model. A tight time cap made the default
# model depend on how busy the machine was (on a loaded machine a 6-minute cap stopped training
# in epoch 2 at ~30% validation accuracy). All 6 epochs take ~6 minutes on 2 idle cores.
TRAIN_MAX_MINUTES = 20.0
TRAIN_LR = 1e-3


def bundle_ready(path: Path) -> bool:
    return (path / "exits.json").exists() and (path / "model.safetensors").exists()


def ensure_default_bundle(
    settings: Settings,
    *,
    progress: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> Path:
    """The default bundle's directory, building it first if it does not exist yet."""
    target = settings.default_model_dir
    if bundle_ready(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".default-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait and reuse it
        if bundle_ready(target):
            return target
        log(f"building the default model bundle in {target} (first use; a few minutes)")
        build_default_bundle(settings, target, progress=progress, log=log)
    return target


def build_default_bundle(
    settings: Settings,
    target: Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
    per_class: int = CORPUS_PER_CLASS,
    epochs: int = TRAIN_EPOCHS,
    max_minutes: float = TRAIN_MAX_MINUTES,
    config: str = "small",
) -> Path:
    from doctriage.modeling import train_bundle
    from pipelines.synth import generate_corpus
    from workers.allocator import tune_malloc

    if settings.malloc_tuning:
        tune_malloc()  # training allocates like inference does, only more

    corpus = settings.home / "cache" / f"default-corpus-{per_class}-{CORPUS_SEED}"
    if not (corpus / "manifest.csv").exists():
        generate_corpus(
            corpus,
            per_class,
            CORPUS_SEED,
            scanned_fraction=CORPUS_SCANNED_FRACTION,
            progress=progress,
        )
    staging = target.with_name(target.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    train_bundle(
        corpus,
        staging,
        config=config,
        placements="every",
        strategy="joint",
        epochs=epochs,
        lr=TRAIN_LR,
        max_minutes=max_minutes,
        seed=CORPUS_SEED,
        workers=2,
        val_fraction=0.25,
        cache_dir=settings.home / "cache" / "pages",
        ingest=ingest_options(settings),
        progress=progress,
        log=log,
    )
    shutil.rmtree(staging / "checkpoint", ignore_errors=True)  # training state is not needed
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # appears complete or not at all
    return target
