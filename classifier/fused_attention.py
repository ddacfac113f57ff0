"""An encoder layer run with one fused attention kernel (torch's scaled_dot_product_attention),
for accelerators. Same weights and the same function as transformers' LayoutLMv3Layer, not the
same bits: transformers' eager attention makes ~8 passes over a (B, heads, L, L) tensor (scores,
+bias, +mask, CogView's rescale and max, softmax), which bounds a base-size model on a GPU by
memory traffic; the fused kernel reads the summed bias once. CogView's PB-Relax is a softmax
rewritten for fp16 range; softmax itself is what it computes.

The eager path stays the default and the reference (checked bit for bit against transformers);
this one is checked against it to float tolerance (tests/classifier/test_fused_attention.py)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def attention_bias(
    position_bias: torch.Tensor | None, attention_mask: torch.Tensor, head_size: int, dtype
) -> torch.Tensor:
    """The additive (B, heads|1, L, L) term of every layer in one tensor: the relative-position
    bias scaled as transformers scales it, plus the padding mask."""
    mask = attention_mask.to(dtype)
    if position_bias is None:
        return mask
    return (position_bias.to(dtype) / math.sqrt(head_size)) + mask


def fused_layer(layer, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """transformers' LayoutLMv3Layer.forward (inference: no dropout, no head mask) with the
    attention product, bias and softmax in one kernel."""
    att = layer.attention.self
    b, n, _ = hidden.shape
    heads, size = att.num_attention_heads, att.attention_head_size

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, n, heads, size).transpose(1, 2)

    q, k, v = split(att.query(hidden)), split(att.key(hidden)), split(att.value(hidden))
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.expand(b, heads, n, n))
    context = context.transpose(1, 2).reshape(b, n, heads * size)
    attended = layer.attention.output(context, hidden)
    return layer.output(layer.intermediate(attended), attended)
