"""The raster exit's own epochs, after the joint ones.

Why: in the joint epochs the raster exit learns at the backbone's learning rate for as many
epochs as the transformer gets (4-6 on realdocs in 20 minutes), and it ended far short of what
a CNN of this shape reached trained alone (30% against 54% on pages that need OCR, a width-32
copy on a split of the training documents). Its forward and
backward pass cost about a sixth of the backbone's, and here it runs on nothing else: 20 more
epochs on the cached rasters take minutes, with every other weight left as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

from classifier.model import EarlyExitModel
from classifier.raster_exit import normalised_white, shifted
from classifier.training import TrainOptions

BATCH = 64


def train_raster_exit(model: EarlyExitModel, pixels: torch.Tensor, labels: torch.Tensor,
                      options: TrainOptions,
                      log: Callable[[str], None] = lambda _: None) -> list[float]:
    """`options.raster_epochs` passes of the raster exit alone over `pixels` (N, 3, S, S) with
    `labels`, shifted rasters, cosine-decayed `options.raster_lr`; returns each epoch's mean
    loss. No raster exit or no epochs: nothing runs."""
    epochs, lr, seed = options.raster_epochs, options.raster_lr, options.seed
    head = model.raster_exit
    if head is None or epochs < 1 or not len(labels):
        return []
    white, device = normalised_white(model), model.device
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.05)
    steps = math.ceil(len(labels) / BATCH)
    losses: list[float] = []
    head.train()
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(seed * 1000 + 500 + epoch)
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for b in range(steps):
            done = (epoch * steps + b) / (epochs * steps)
            for group in optimizer.param_groups:
                group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * done)))
            idx = order[b * BATCH:(b + 1) * BATCH]
            x = shifted(pixels.index_select(0, idx).to(device), white, generator)
            loss = F.cross_entropy(head(x), labels.index_select(0, idx).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(labels))
        log(f'{{"raster_epoch": {epoch + 1}, "loss": {losses[-1]:.4f}}}')
    head.eval()
    return losses
