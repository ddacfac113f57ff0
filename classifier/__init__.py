"""The early-exit multimodal page classifier (pure torch + transformers; no Celery, no SQL).

Main entry points: `load_bundle` / `save_bundle`, `EarlyExitModel` (staged forward),
`PageInput`, `predict_pages`, the policies in `classifier.policy`.

The names load on first use (PEP 562), so a light submodule such as `classifier.calibration`
(used by the audit commands) does not pull torch and transformers in with the package."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "BundleError": "classifier.bundle",
    "load_bundle": "classifier.bundle",
    "save_bundle": "classifier.bundle",
    "PageInput": "classifier.inputs",
    "EarlyExitModel": "classifier.model",
    "PagePrediction": "classifier.stage_batcher",
    "predict_pages": "classifier.predict",
    "StageState": "classifier.state",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'classifier' has no attribute {name!r}")
    return getattr(import_module(home), name)
