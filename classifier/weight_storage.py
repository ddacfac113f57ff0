"""How a bundle's weights are stored on disk, and read back into a float32 model.

- float32 / float16: every floating-point tensor cast to that type.
- int8 (weight-only, per row): each matrix stored as int8 with one float16 scale per row
  (`NAME@scale`: row max |w| / 127); vectors (biases, LayerNorm) as float16. A quarter of the
  float32 size; the model still computes in float32 (`unpack` multiplies the scales back).
"""

from __future__ import annotations

import torch

SCALE_SUFFIX = "@scale"


def pack(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        v = value.detach().cpu()
        if not v.is_floating_point():
            out[name] = v.contiguous()
        elif dtype != torch.int8:
            out[name] = v.to(dtype).contiguous()
        elif v.dim() < 2:
            out[name] = v.to(torch.float16).contiguous()
        else:
            rows = v.float().reshape(v.shape[0], -1)
            scale = (rows.abs().amax(dim=1) / 127).clamp_min(1e-12).to(torch.float16)
            q = torch.round(rows / scale.float().unsqueeze(1)).clamp(-127, 127).to(torch.int8)
            out[name] = q.reshape(v.shape).contiguous()
            out[name + SCALE_SUFFIX] = scale.contiguous()
    return out


def unpack(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict to load: int8 matrices times their row scales, everything else as is."""
    out: dict[str, torch.Tensor] = {}
    for name, value in stored.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = stored.get(name + SCALE_SUFFIX)
        if scale is None:
            out[name] = value
        else:
            rows = value.float().reshape(value.shape[0], -1) * scale.float().unsqueeze(1)
            out[name] = rows.reshape(value.shape)
    return out
