"""The raster exit: a small convolutional head that classifies a page from its pixels alone.

Why a separate head: the backbone reads the raster as 8 x 8 linear patch embeddings, and its
pre-encoder exit averages them, which keeps no layout at all; trained from scratch on a few
thousand pages, a word-less pass through the transformer layers answered at chance on realdocs'
scans. Eight 3x3 convolutions over the grayscale raster see the page's layout (columns, blocks,
letterheads, pictures); at width 16 on the 128 px raster that is about 0.1 GFLOPs a page (a
sixth of the small backbone's full depth), next to nothing beside tesseract's seconds.
It is what the OCR-free exit (classifier/textless.py) asks before OCR is paid.

It reads the model's own `pixel_values`, so it needs no input of its own; it is trained jointly
with the other exits (its loss added to theirs, on randomly shifted rasters).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Pixels a training raster may shift each way: pages are not always placed alike on a scan.
SHIFT = 8


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Halve the side, then one more 3x3 convolution at the new size. GroupNorm, not BatchNorm:
    training batches are 16 pages, and batch statistics that small made eval-mode answers swing
    from epoch to epoch."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.GroupNorm(4, c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.GroupNorm(4, c_out), nn.ReLU(inplace=True),
    )


class RasterExit(nn.Module):
    """Logits (B, C) from `pixel_values` (B, 3, S, S), normalised as the model's encode makes
    them; `width` channels after the first block, doubling over four blocks."""

    def __init__(self, num_labels: int, width: int = 32) -> None:
        super().__init__()
        if width < 4 or width % 4:
            raise ValueError(f"raster exit width must be a positive multiple of 4, got {width}")
        self.width = width
        self.features = nn.Sequential(
            _block(1, width), _block(width, 2 * width), _block(2 * width, 4 * width),
            _block(4 * width, 8 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(8 * width, num_labels))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        gray = pixel_values.float().mean(dim=1, keepdim=True)  # scans are grayscale anyway
        return self.classifier(self.features(gray))

    def flops(self, image_size: int) -> float:
        """Multiply-adds x 2 of one page's forward pass."""
        total, side, c_in = 0.0, image_size, 1
        for c_out in (self.width, 2 * self.width, 4 * self.width, 8 * self.width):
            side = (side + 1) // 2
            total += side * side * 9 * (c_in * c_out + c_out * c_out)
            c_in = c_out
        return 2 * (total + c_in * self.classifier[-1].out_features)


def normalised_white(model: Any) -> float:
    """White in the model's normalised pixels (the mean over channels): a page's margin."""
    pre = model.preprocessing
    return sum((1 - m) / s for m, s in zip(pre.image_mean, pre.image_std, strict=True)) / 3


def shifted(pixel_values: torch.Tensor, white: float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """The batch moved by one random offset of up to SHIFT pixels each way, the uncovered border
    filled with `white` (normalised as the pixels are: a page's margin): the raster exit's
    training augmentation."""
    side = pixel_values.shape[-1]
    padded = nn.functional.pad(pixel_values, (SHIFT,) * 4, value=white)
    dx, dy = torch.randint(0, 2 * SHIFT + 1, (2,), generator=generator).tolist()
    return padded[..., dy:dy + side, dx:dx + side]
