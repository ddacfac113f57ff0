"""What the model reads for one page, and how a page image becomes pixel values.

`classifier` knows nothing of PDFs or OCR, nor imports `pipelines`: it reads any `PageLike` (the
pipelines' `Page`, from extraction, an artifact or the training cache, goes in as it is).
`PageInput` is the classifier's own minimal one, for callers without a pipelines page (tests,
benchmarks, synthetic inputs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from PIL import Image

Box = tuple[int, int, int, int]


class PageLike(Protocol):
    words: Sequence[str]
    boxes: Sequence[Box]
    image: Image.Image


@dataclass
class PageInput:
    """One page as the model sees it: words with 0-1000 boxes in reading order, and the raster."""

    words: list[str]
    boxes: list[Box]
    image: Image.Image
    meta: dict = field(default_factory=dict)


def clamp_box(box: Sequence[int]) -> Box:
    """Boxes index 0-1000 embedding tables: anything outside (rounding, OCR noise) is clipped."""
    x0, y0, x1, y1 = (min(1000, max(0, int(v))) for v in box)
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def image_to_array(image: Image.Image, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3): the raster resized the way the model's input expects."""
    return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def pixels_from_arrays(
    arrays: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Stack uint8 HWC arrays into normalised float NCHW pixel values."""
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch - m) / s
