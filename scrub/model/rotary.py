"""Rotary position embeddings (RoPE) as a pure function of plain tensors.

The first ``rotary_dim`` features of each query and key are rotated in pairs by angles
``position * inv_freq[i]`` with ``inv_freq[i] = 1 / base ** (2 i / rotary_dim)`` (computed in
float32, as HuggingFace does; cos and sin are cast to the activations' dtype before use); the
other features pass through. Two pairings:

* ``"neox"`` (GPT-NeoX, Llama, Mistral, Qwen2, Gemma): feature ``i`` pairs with
  ``i + rotary_dim / 2`` (``rotate_half``);
* ``"gptj"`` (GPT-J): feature ``2 i`` pairs with ``2 i + 1`` (``rotate_every_two``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["PAIRINGS", "inverse_frequencies", "rotate"]

PAIRINGS = ("neox", "gptj")


def inverse_frequencies(rotary_dim: int, base: float, device: torch.device | str | None = None) -> Tensor:
    """``1 / base ** (arange(0, rotary_dim, 2) / rotary_dim)`` in float32: ``[rotary_dim / 2]``."""
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64, device=device).float() / rotary_dim
    return 1.0 / (base**exponents)  # [r/2]


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rotate_every_two(x: Tensor) -> Tensor:
    return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)


def rotate(
    x: Tensor, positions: Tensor, rotary_dim: int, base: float, pairing: str, inv_freq: Optional[Tensor] = None
) -> Tensor:
    """``x [b, h, p, e]`` (queries or keys of some heads) rotated for ``positions``.

    ``positions`` is ``[p]`` (the same for every row) or ``[b, p]``; the first ``rotary_dim``
    features rotate, the rest pass through unchanged. ``inv_freq`` (``[rotary_dim / 2]``) are the
    source model's own inverse frequencies where it holds them (a model cast to bfloat16 holds
    them rounded); by default they are computed from ``base``.
    """
    if inv_freq is None:
        inv_freq = inverse_frequencies(rotary_dim, base, x.device)  # [r/2]
    inv_freq = inv_freq.to(device=x.device, dtype=torch.float32)  # [r/2]
    angles = positions.to(x.device)[..., None].float() * inv_freq  # [p, r/2] or [b, p, r/2]
    if angles.ndim == 3:
        angles = angles[:, None]  # [b, 1, p, r/2]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    if pairing == "neox":
        emb = torch.cat((angles, angles), dim=-1)  # [..., p, r]
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        out = x_rot * cos + _rotate_half(x_rot) * sin  # [b, h, p, r]
    elif pairing == "gptj":
        cos = torch.repeat_interleave(angles.cos().to(x.dtype), 2, dim=-1)  # [..., p, r]
        sin = torch.repeat_interleave(angles.sin().to(x.dtype), 2, dim=-1)  # [..., p, r]
        out = x_rot * cos + _rotate_every_two(x_rot) * sin  # [b, h, p, r]
    else:
        raise ValueError(f"unknown rotary pairing {pairing!r}; known: {PAIRINGS}")
    if x_pass.shape[-1] == 0:
        return out
    return torch.cat((out, x_pass), dim=-1)  # [b, h, p, e]
