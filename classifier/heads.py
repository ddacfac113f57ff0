"""Exit heads. A ramp classifies from a pooled hidden state; a gate predicts whether the final
head will be right for this page (the paper's gating exits). Pooling: masked mean of the text
tokens, mean of the visual tokens, or both concatenated (the pre-encoder exit variants)."""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("text", "vision", "concat")


def pool(hidden: torch.Tensor, text_mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, L, H) -> (B, H) or (B, 2H). Text tokens come first (T of them), then the visual ones."""
    t = text_mask.shape[1]
    mask = text_mask.to(hidden.dtype).unsqueeze(-1)
    text = (hidden[:, :t] * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    if how == "text":
        return text
    vision = hidden[:, t:].mean(1)
    if how == "vision":
        return vision
    if how == "concat":
        return torch.cat([text, vision], dim=-1)
    raise ValueError(f"unknown pooling {how!r}; use one of {POOLINGS}")


def pooled_width(hidden: int, how: str) -> int:
    return 2 * hidden if how == "concat" else hidden


class RampHead(nn.Module):
    def __init__(self, hidden: int, num_labels: int, pooling: str, dropout: float = 0.1):
        super().__init__()
        self.pooling = pooling
        width = pooled_width(hidden, pooling)
        self.norm = nn.LayerNorm(width)
        self.dense = nn.Linear(width, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_labels)

    def forward(self, hidden: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm(pool(hidden, text_mask, self.pooling))
        return self.out(self.dropout(torch.tanh(self.dense(x))))


class GateHead(nn.Module):
    """One logit: "the final head will be right for this page"."""

    def __init__(self, hidden: int, pooling: str):
        super().__init__()
        self.pooling = pooling
        width = pooled_width(hidden, pooling)
        self.norm = nn.LayerNorm(width)
        self.dense = nn.Linear(width, max(8, hidden // 2))
        self.out = nn.Linear(max(8, hidden // 2), 1)

    def forward(self, hidden: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm(pool(hidden, text_mask, self.pooling))
        return self.out(torch.tanh(self.dense(x))).squeeze(-1)
