"""LayoutLMv3's relative-position attention bias, built once per batch as ONE tensor.

transformers computes two (B, heads, L, L) tensors per forward: the 1D bias over token positions
and the 2D (layout) bias over box coordinates, each by running the log-bucket function over
B x L x L integers. For the staged model that is both slow (it cost more than an encoder layer per
page) and heavy (a parked page carried 2.1 MB of biases). Here:

- bucket -> bias values are looked up in a table over every possible coordinate difference
  (the bucket function is evaluated 2 x 1025 times instead of B x L x L times);
- the 1D bias is the same for every page (positions are 0..T-1 then 0..P for the patches), so
  it is built once for the batch and broadcast;
- the two are summed into one tensor the layers take as `rel_pos` (with `rel_2d_pos=0`).

The values are bit-identical to transformers' (same buckets, same weights, same summation
order); tests/classifier check staged == full forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import LayoutLMv3Config


def _bias_table(encoder, linear: torch.nn.Linear, span: int, bins: int, max_distance: int):
    """(2*span+1, heads) bias values for every difference in [-span, span]."""
    diffs = torch.arange(-span, span + 1, device=linear.weight.device)
    buckets = encoder.relative_position_bucket(diffs, num_buckets=bins, max_distance=max_distance)
    return linear.weight.t()[buckets]


def _relative(table: torch.Tensor, coords: torch.Tensor, span: int) -> torch.Tensor:
    """(B, L, L, heads) with out[b, i, j] = table[coords[b, j] - coords[b, i]]."""
    if coords.numel() and (int(coords.min()) < 0 or int(coords.max()) > span):
        raise ValueError(f"layout coordinates outside 0..{span}")
    diffs = (coords.unsqueeze(-2) - coords.unsqueeze(-1)) + span
    return F.embedding(diffs, table)  # a row gather: 2x faster than indexing per head


@torch.no_grad()  # transformers takes these weights without gradient too
def position_bias(
    encoder, config: LayoutLMv3Config, bbox: torch.Tensor, text_len: int, visual_len: int
) -> torch.Tensor | None:
    """The summed attention bias (B, heads, L, L) for a batch whose token boxes (text then
    patches, 0..1000 coordinates) are `bbox` (B, L, 4); None when the model uses no
    relative-position bias."""
    if not config.has_relative_attention_bias:
        return None  # transformers' layers add no bias at all in that case
    device = bbox.device
    batch = bbox.shape[0]
    positions = torch.cat(
        [torch.arange(text_len, device=device), torch.arange(visual_len, device=device)]
    ).unsqueeze(0)
    span_1d = max(text_len, visual_len)
    table_1d = _bias_table(
        encoder, encoder.rel_pos_bias, span_1d, encoder.rel_pos_bins, encoder.max_rel_pos
    )
    bias = _relative(table_1d, positions, span_1d)  # (1, L, L, heads): the same for every page
    if not config.has_spatial_attention_bias:
        return bias.permute(0, 3, 1, 2).expand(batch, -1, -1, -1)
    span_2d = config.max_2d_position_embeddings
    bins, max_d = encoder.rel_2d_pos_bins, encoder.max_rel_2d_pos
    table_x = _bias_table(encoder, encoder.rel_pos_x_bias, span_2d, bins, max_d)
    table_y = _bias_table(encoder, encoder.rel_pos_y_bias, span_2d, bins, max_d)
    summed = _relative(table_x, bbox[:, :, 0], span_2d)
    summed += _relative(table_y, bbox[:, :, 3], span_2d)  # x + y, as transformers sums them
    summed += bias  # then 1D + 2D (addition commutes exactly)
    return summed.permute(0, 3, 1, 2).contiguous()
