"""Named backbone sizes and exit placements.

The named configurations are trained from scratch by our own code (no pretrained weights can be
downloaded here). "small" was chosen by measuring train/inference speed on the 2-core CPU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import LayoutLMv3Config


@dataclass(frozen=True)
class BackboneSize:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    image_size: int
    patch_size: int
    max_text_len: int
    vocab_size: int


NAMED_SIZES: dict[str, BackboneSize] = {
    # tests: a few ms per batch
    "tiny": BackboneSize(64, 4, 2, 128, 64, 16, 64, 600),
    # the default for doctriage train / the default bundle
    "small": BackboneSize(192, 6, 4, 768, 128, 16, 192, 8000),
    # closer to the paper's proportions, for a GPU
    "base": BackboneSize(768, 12, 12, 3072, 224, 16, 512, 30000),
}


def backbone_config(size: BackboneSize, vocab_size: int | None = None) -> LayoutLMv3Config:
    """A LayoutLMv3Config for `size` (layout embedding widths must add up to the hidden size)."""
    coordinate = size.hidden // 6
    shape = (size.hidden - 4 * coordinate) // 2
    return LayoutLMv3Config(
        vocab_size=vocab_size or size.vocab_size,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=size.intermediate,
        max_position_embeddings=size.max_text_len + 4,
        coordinate_size=coordinate,
        shape_size=shape,
        input_size=size.image_size,
        patch_size=size.patch_size,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )


def exit_layers_for(placement: str | Sequence[int], num_layers: int) -> list[int]:
    """Encoder layers completed at each exit stage; always starts with 0 (pre-encoder exit)
    and ends with `num_layers` (the final head).

    `placement`: "every", "every_other", "quarter", "final" or explicit layers ("2,4" or [2, 4]).
    """
    if isinstance(placement, str):
        name = placement.strip().lower().replace("-", "_")
        if name == "every":
            layers = list(range(1, num_layers + 1))
        elif name == "every_other":
            layers = list(range(2, num_layers + 1, 2))
        elif name == "quarter":
            layers = [max(1, -(-num_layers * k // 4)) for k in range(1, 5)]
        elif name == "final":
            layers = []
        else:
            try:
                layers = [int(p) for p in name.split(",") if p.strip()]
            except ValueError:
                raise ValueError(
                    f"unknown exit placement {placement!r}: use every, every_other, quarter, "
                    "final or a comma-separated list of layers"
                ) from None
    else:
        layers = [int(p) for p in placement]
    bad = [n for n in layers if not 0 <= n <= num_layers]
    if bad:
        raise ValueError(f"exit layers {bad} outside 0..{num_layers}")
    return sorted({0, *layers, num_layers})
