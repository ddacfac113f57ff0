"""The OCR-free exit: classify a page from its raster alone, before OCR is paid for it.

A page that needs OCR arrives with no words. A model with a raster exit
(classifier/raster_exit.py, `train --raster-exit`) answers it from its pixels with that small
convolutional head. A model without one runs the word-less pass: the model on the page with its
text replaced by the encoding of an empty page (a [CLS] [SEP] sequence), which training teaches by
dropping the words of a share of the training pages (`TrainOptions.text_dropout`); on realdocs
that pass learned nothing (chance), the raster exit is the one that earns its keep. Calibration
gives the exit its own temperature and threshold, chosen against the full-depth answer *with*
OCR (classifier/calibrate.py `calibrate_ocr_free`).

`model.ocr_free` (exits.json "ocr_free", None for a bundle without the exit) holds
{"temperature", "threshold", ...}: a page whose calibrated confidence reaches the threshold is
answered without OCR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

TEXT_KEYS = ("input_ids", "bbox", "attention_mask")


def empty_text(model: Any, *, trimmed: bool = True) -> dict[str, torch.Tensor]:
    """The text part of an empty page's encoding as (1, T) tensors: trimmed to its real tokens
    (the OCR-free pass's short sequence), or padded to max_text_len like any encoded page."""
    enc = model.encode([_Blank()])
    n = int(enc["attention_mask"].sum()) if trimmed else enc["input_ids"].shape[1]
    return {k: enc[k][:, :n] for k in TEXT_KEYS}


def without_text(inputs: dict[str, torch.Tensor], empty: dict[str, torch.Tensor],
                 rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`inputs` with the text of every page replaced by the empty page's (`empty` trimmed: the
    OCR-free pass), or only of the pages where the bool mask `rows` is true (`empty` padded to
    the inputs' length: training's word dropout)."""
    batch = inputs["pixel_values"].shape[0]
    if rows is None:
        return {**inputs, **{k: v.expand(batch, *v.shape[1:]).clone() for k, v in empty.items()}}
    out = dict(inputs)
    for key, value in empty.items():
        pick = rows.view(-1, *([1] * (inputs[key].dim() - 1)))
        out[key] = torch.where(pick, value.expand_as(inputs[key]), inputs[key])
    return out


@torch.no_grad()
def ocr_free_logits(model: Any, inputs: dict[str, torch.Tensor],
                    batch_size: int = 32) -> torch.Tensor:
    """Logits (N, C) of the pages read without their words: the raster exit's where the model
    has one, else the last exit of the word-less pass."""
    raster = model.raster_exit
    empty = empty_text(model) if raster is None else None  # the word-less pass's only
    out = []
    n = inputs["pixel_values"].shape[0]
    for start in range(0, n, batch_size):
        part = {k: v[start:start + batch_size] for k, v in inputs.items()}
        if raster is not None:
            out.append(raster(part["pixel_values"]).float())
        else:
            logits, _ = model.all_exit_logits(without_text(part, empty))
            out.append(logits[-1].float())
    return torch.cat(out) if out else torch.zeros(0, model.num_labels)


@dataclass(frozen=True)
class OcrFreeAnswer:
    label: str
    confidence: float  # calibrated with the OCR-free temperature
    exits: bool  # confident enough to skip OCR


def has_ocr_free_exit(model: Any) -> bool:
    """The bundle carries a calibrated OCR-free exit (exits.json "ocr_free"): without one no
    page can skip OCR, so deferring it only adds a round trip."""
    return getattr(model, "ocr_free", None) is not None


def ocr_free_answers(model: Any, images: Sequence[Image.Image],
                     batch_size: int = 16) -> list[OcrFreeAnswer]:
    """The OCR-free pass over page rasters: each page's answer and whether it may skip OCR.
    Never exits when the bundle has no OCR-free exit."""
    spec = getattr(model, "ocr_free", None)
    if not images:
        return []
    inputs = model.encode([_Blank(im) for im in images])
    logits = ocr_free_logits(model, inputs, batch_size)
    temperature = float(spec["temperature"]) if spec else 1.0
    probs = torch.softmax(logits / temperature, dim=-1)
    conf, idx = probs.max(dim=-1)
    threshold = float(spec["threshold"]) if spec else float("inf")
    return [OcrFreeAnswer(model.label_names[int(i)], float(c), float(c) >= threshold)
            for c, i in zip(conf.tolist(), idx.tolist(), strict=True)]


class _Blank:
    """A page with no words (classifier.inputs.PageLike)."""

    def __init__(self, image: Image.Image | None = None) -> None:
        self.words: list[str] = []
        self.boxes: list[tuple[int, int, int, int]] = []
        self.image = image if image is not None else Image.new("RGB", (32, 32), "white")
