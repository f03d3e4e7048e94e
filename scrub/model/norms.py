"""Normalisation pieces of the model view, each a pure function of plain tensors.

``kind`` (``ViewConfig.normalization``) selects the formula; every one reproduces its source's
arithmetic, float32 upcasts included:

* ``"LN"``: TransformerLens ``LayerNorm`` (low-precision inputs normalised in float32, cast back,
  then the gain and shift in the model's dtype);
* ``"LNPre"``: TransformerLens's folded ``LayerNormPre`` (no gain, no shift);
* ``"layernorm"``: ``torch.nn.LayerNorm`` as HuggingFace GPT-2, GPT-NeoX and GPT-J use it (one
  kernel in the model's dtype);
* ``"rms"``: Llama's RMSNorm: ``w * (x32 * rsqrt(mean(x32**2) + eps)).to(dtype)``;
* ``"rms_1p"``: Gemma's RMSNorm: ``(x32 * rsqrt(mean(x32**2) + eps) * (1 + w32)).to(dtype)``;
* ``None``: the identity.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["NORMALIZATIONS", "normalise", "layer_norm_tl", "rms_norm", "rms_norm_one_plus"]

#: Every normalisation kind the view implements.
NORMALIZATIONS: tuple[Optional[str], ...] = ("LN", "LNPre", "layernorm", "rms", "rms_1p", None)


def layer_norm_tl(x: Tensor, w: Optional[Tensor], b: Optional[Tensor], eps: float) -> Tensor:
    """TransformerLens's LayerNorm (``w``/``b`` ``None``: its folded ``LayerNormPre``)."""
    xf = x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)
    if xf is x:  # the gain and shift inside the same kernel
        return F.layer_norm(x, (x.shape[-1],), weight=w, bias=b, eps=eps)  # [..., d]
    out = F.layer_norm(xf, (xf.shape[-1],), eps=eps).to(x.dtype)  # [..., d]
    if w is not None and b is not None:
        out = out * w + b
    return out


def rms_norm(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """Llama-style RMSNorm: normalised in float32, cast back, then scaled by ``w``."""
    xf = x.to(torch.float32)
    variance = xf.pow(2).mean(-1, keepdim=True)  # [..., 1]
    return w * (xf * torch.rsqrt(variance + eps)).to(x.dtype)  # [..., d]


def rms_norm_one_plus(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """Gemma-style RMSNorm: scaled by ``1 + w`` in float32, then cast back."""
    xf = x.float()
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)  # [..., d]
    return (out * (1.0 + w.float())).type_as(x)  # [..., d]


def normalise(kind: Optional[str], x: Tensor, w: Optional[Tensor], b: Optional[Tensor], eps: float) -> Tensor:
    """Normalisation ``kind`` of ``x [..., d]`` with gain ``w`` and shift ``b`` (where it has them)."""
    if kind is None:
        return x
    if kind in ("LN", "LNPre"):
        return layer_norm_tl(x, w, b, eps)
    if kind == "layernorm":
        return F.layer_norm(x, (x.shape[-1],), weight=w, bias=b, eps=eps)  # [..., d]
    if w is None:
        raise ValueError(f"normalisation {kind!r} needs a gain")
    if kind == "rms":
        return rms_norm(x, w, eps)
    if kind == "rms_1p":
        return rms_norm_one_plus(x, w, eps)
    raise ValueError(f"unknown normalisation {kind!r}; known: {NORMALIZATIONS}")
