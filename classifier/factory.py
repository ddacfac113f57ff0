"""A new, untrained model of a named size: the one place that turns a size name, exit placements,
labels and a tokenizer into an EarlyExitModel (training, tests and benchmarks all start here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from classifier.config import NAMED_SIZES, backbone_config, exit_layers_for
from classifier.model import EarlyExitModel, Preprocessing


def new_model(
    size_name: str,
    placements: str | Sequence[int],
    label_names: Sequence[str],
    tokenizer: Any,
    *,
    raster_width: int = 0,
) -> EarlyExitModel:
    """Weights are drawn from torch's generator: seed it first for a reproducible model.
    `raster_width` > 0 adds a raster exit of that width (classifier/raster_exit.py)."""
    size = NAMED_SIZES[size_name]
    return EarlyExitModel(
        backbone_config(size, vocab_size=len(tokenizer)),
        exit_layers_for(placements, size.layers),
        list(label_names),
        tokenizer,
        Preprocessing(size.max_text_len, size.image_size),
        raster_width=raster_width,
    )
