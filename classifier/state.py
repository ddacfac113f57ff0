"""The hidden state of a batch between two exits: everything the next encoder layers need.

Tensors are batch-first and padded to the model's fixed sequence length, so states made from
different batches can be concatenated and split freely (the stage batcher relies on this)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch


@dataclass
class StageState:
    hidden: torch.Tensor  # (B, L, H) hidden states after the layers run so far
    attention_mask: torch.Tensor  # (B, 1, 1, L) additive mask, as the layers take it
    text_mask: torch.Tensor  # (B, T) 1 for real text tokens (pooling)
    # (B, heads, L, L) relative-position + layout attention bias, summed (classifier/
    # position_bias.py), or None. It is most of a parked page's bytes (1 MB of 1.2 MB for the
    # small config), hence one tensor rather than transformers' two.
    position_bias: torch.Tensor | None
    stage: int  # exit stage reached: 0 = embeddings, k = after the k-th encoder exit
    # (B, L, 4) token boxes (text then patches) while the bias is not built yet: the model
    # builds it at the first advance, so a page leaving at the pre-encoder exit never pays
    # for it (and a page parked at stage 0 carries 8 KB instead of 1 MB).
    layout: torch.Tensor | None = None

    _TENSORS = ("hidden", "attention_mask", "text_mask", "position_bias", "layout")

    def __len__(self) -> int:
        return self.hidden.shape[0]

    @property
    def text_len(self) -> int:
        return self.text_mask.shape[1]

    def select(self, indices: torch.Tensor | Sequence[int]) -> StageState:
        """The sub-batch at `indices` (a LongTensor/list of positions or a BoolTensor mask)."""
        idx = torch.as_tensor(indices, device=self.hidden.device)
        if idx.dtype == torch.bool:
            idx = idx.nonzero(as_tuple=True)[0]
        return replace(self, **{n: _take(getattr(self, n), idx) for n in self._TENSORS})

    @staticmethod
    def cat(states: Sequence[StageState]) -> StageState:
        """One batch from several states at the same stage (order kept)."""
        return StageState.gather([(s, None) for s in states])

    @staticmethod
    def gather(parts: Sequence[tuple[StageState, Sequence[int] | None]]) -> StageState:
        """One batch from rows of several states at the same stage (order kept; rows None: all
        of that state), each row copied once: what `select` then `cat` give, without the copy
        in between."""
        if not parts:
            raise ValueError("StageState.gather needs at least one state")
        stages = {s.stage for s, _ in parts}
        if len(stages) != 1:
            raise ValueError(f"cannot join states at different stages: {sorted(stages)}")
        first = parts[0][0]
        device = first.hidden.device
        index = [None if rows is None else torch.as_tensor(rows, dtype=torch.long, device=device)
                 for _, rows in parts]
        sizes = [len(s) if idx is None else len(idx)
                 for (s, _), idx in zip(parts, index, strict=True)]
        joined: dict[str, torch.Tensor | None] = {}
        for n in StageState._TENSORS:
            tensors = [getattr(s, n) for s, _ in parts]
            if tensors[0] is None:
                joined[n] = None
                continue
            out = tensors[0].new_empty((sum(sizes), *tensors[0].shape[1:]))
            at = 0
            for t, size, idx in zip(tensors, sizes, index, strict=True):
                if idx is None:
                    out[at : at + size].copy_(t)
                else:
                    torch.index_select(t, 0, idx, out=out[at : at + size])
                at += size
            joined[n] = out
        return replace(first, **joined)

    def to(self, device: torch.device | str) -> StageState:
        return replace(
            self,
            **{n: None if (t := getattr(self, n)) is None else t.to(device) for n in self._TENSORS},
        )


def _take(t: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.index_select(0, idx.to(t.device))
