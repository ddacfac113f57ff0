"""The fused-attention encoder path (for GPUs) computes what transformers' eager layers do."""

from __future__ import annotations

import torch


def test_fused_attention_matches_the_eager_layers(model, pages):
    inputs = model.encode(pages)
    model.eval()
    with torch.no_grad():
        eager, _ = model.all_exit_logits(inputs)
        model.attention_impl = "fused"
        try:
            fused, _ = model.all_exit_logits(inputs)
        finally:
            model.attention_impl = "eager"
    assert len(eager) == len(fused) == model.num_stages
    for a, b in zip(eager, fused, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    # Padding is masked the same way: the pages differ in word count, so some rows are padded.
    assert bool((inputs["attention_mask"] == 0).any())
