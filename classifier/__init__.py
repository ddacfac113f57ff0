"""The early-exit multimodal page classifier (pure torch + transformers; no Celery, no SQL).

Main entry points: `load_bundle` / `save_bundle`, `EarlyExitModel` (staged forward),
`PageInput`, `predict_pages`, the policies in `classifier.policy`."""

from classifier.bundle import BundleError, load_bundle, save_bundle
from classifier.inputs import PageInput
from classifier.model import EarlyExitModel
from classifier.predict import PagePrediction, predict_pages
from classifier.state import StageState

__all__ = [
    "BundleError",
    "EarlyExitModel",
    "PageInput",
    "PagePrediction",
    "StageState",
    "load_bundle",
    "predict_pages",
    "save_bundle",
]
