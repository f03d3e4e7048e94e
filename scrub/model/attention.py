"""Attention of one layer, in the pieces the batched engine needs separately; pure functions of
plain tensors and the `ViewConfig` (no `ModelView` here).

A head's output is built in steps:

1. the port input normalised (`scrub.model.norms`), plus ``W_pos`` on q and k inputs of a
   shortformer model (`with_positions`);
2. `project`: the normalised input through ``W_Q``, ``W_K`` or ``W_V`` (and the bias) of the
   selected heads, one matmul for all of them; q and k of a rotary model are then rotated for
   their positions (`scrub.model.rotary`);
3. `mix`: attention of the projected queries over the projected keys (causal and sliding-window
   masks by query position, optional score soft-capping), applied to the projected values:
   ``z``, before ``W_O``.

Splitting them lets the engine take the projection of a port nobody patched straight from the
clean pass, and evaluate queries at some positions only (``q_pos``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from scrub.errors import ScheduleError
from scrub.model.config import ViewConfig

__all__ = [
    "query_positions",
    "with_positions",
    "project",
    "key_value_heads",
    "expand_kv",
    "attention_mask",
    "soft_cap",
    "mix",
    "mix_small",
    "scratch",
]


def query_positions(q_pos: Optional[Tensor], n_q: int, n_keys: int, device: torch.device) -> Tensor:
    """``q_pos`` as a long tensor (``[q]`` or ``[b, q]``); default ``0..n_keys-1``."""
    if q_pos is None:
        if n_q != n_keys:
            raise ScheduleError(
                f"q has {n_q} positions and k/v {n_keys}: pass q_positions to say where the queries sit"
            )
        return torch.arange(n_keys, device=device)  # [q]
    q_pos = torch.as_tensor(q_pos, dtype=torch.long, device=device)
    if q_pos.ndim not in (1, 2) or q_pos.shape[-1] != n_q:
        raise ScheduleError(f"q_positions must be [q] or [batch, q] with q={n_q}, got {tuple(q_pos.shape)}")
    return q_pos


def with_positions(config: ViewConfig, W_pos: Optional[Tensor], port: str, x_n: Tensor, positions: Tensor) -> Tensor:
    """``x_n`` plus ``W_pos[positions]`` for the q and k ports of a shortformer model (else itself)."""
    if config.positional == "shortformer" and port in ("q", "k") and W_pos is not None:
        return x_n + W_pos[positions]  # [b, p, d_model]
    return x_n


def project(W: Tensor, b: Tensor, x_n: Tensor) -> Tensor:
    """Normalised input ``x_n [b, p, d]`` through heads' weights ``W [h, d, e]``, ``b [h, e]``:
    ``[b, h, p, e]``."""
    n_h, e = W.shape[0], W.shape[2]
    y = torch.addmm(b.reshape(n_h * e), x_n.reshape(-1, x_n.shape[-1]), W.permute(1, 0, 2).reshape(-1, n_h * e))  # [b*p, h*e]
    return y.reshape(x_n.shape[0], x_n.shape[1], n_h, e).transpose(1, 2)  # [b, h, p, e]


def key_value_heads(config: ViewConfig, heads: slice) -> slice:
    """The key/value heads that the query heads ``heads`` (``slice(None)`` or ``slice(h, h + 1)``) read."""
    if heads == slice(None) or config.kv_group == 1:
        return heads
    h = heads.start
    return slice(h // config.kv_group, h // config.kv_group + 1)


def expand_kv(config: ViewConfig, x: Tensor, n_query_heads: int) -> Tensor:
    """Keys or values ``x [b, hk, p, e]`` repeated to one per query head ``[b, h, p, e]``."""
    if x.shape[1] == n_query_heads:
        return x
    return torch.repeat_interleave(x, n_query_heads // x.shape[1], dim=1)  # [b, h, p, e]


def attention_mask(config: ViewConfig, layer: int, q_pos: Tensor, n_keys: int) -> Optional[Tensor]:
    """Which keys (``0..n_keys-1``) each query at ``q_pos`` sees: ``[pq, pk]`` or ``[b, 1, pq, pk]``
    (``None``: all of them). Causal: ``k <= q``; sliding window ``w``: also ``k > q - w``."""
    window = config.sliding_window(layer)
    if not config.causal and window is None:
        return None
    keys = torch.arange(n_keys, device=q_pos.device)  # [pk]
    q = q_pos[..., None]  # [pq, 1] or [b, pq, 1]
    mask = keys <= q if config.causal else torch.ones_like(keys <= q)  # [pq, pk] or [b, pq, pk]
    if window is not None:
        mask = mask & (keys > q - window)
    return mask[:, None] if mask.ndim == 3 else mask


def soft_cap(x: Tensor, cap: Optional[float]) -> Tensor:
    """``cap * tanh(x / cap)`` (Gemma-2's attention-score and logit soft-capping); ``x`` if ``cap`` is None."""
    if cap is None:
        return x
    return torch.tanh(x / cap) * cap


def mix(config: ViewConfig, layer: int, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor) -> Tensor:
    """``z [b, h, pq, e]``: queries ``q [b, h, pq, e]`` at ``q_pos`` attend to keys and values
    ``k, v [b, h or hk, pk, e]`` at ``0..pk-1`` (grouped key/value heads are repeated)."""
    k = expand_kv(config, k, q.shape[1])  # [b, h, pk, e]
    v = expand_kv(config, v, q.shape[1])  # [b, h, pk, e]
    mask = attention_mask(config, layer, q_pos, k.shape[2])
    scale = 1.0 / float(config.layer_attn_scales[layer])
    if config.attn_softcap is None and not config.attn_fp32 and not config.attn_eager:
        # every query sees at least its own key, so no softmax row is empty
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)  # [b, h, pq, e]
    # the eager formula HuggingFace uses for these settings
    if config.attn_fp32:
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale  # [b, h, pq, pk]
    else:
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # [b, h, pq, pk]
    scores = soft_cap(scores, config.attn_softcap)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)  # [b, h, pq, pk]
    return torch.matmul(weights, v)  # [b, h, pq, e]


def scratch(work: Optional[dict], name: str, shape: tuple, like: Tensor) -> Tensor:
    """An uninitialised ``shape`` tensor: a view of the reusable buffer ``work[name]`` (grown
    when too small), or a new tensor when ``work`` is None."""
    if work is None:
        return like.new_empty(shape)
    numel = math.prod(shape)
    buf = work.get(name)
    if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
        buf = work[name] = like.new_empty(numel)
    return buf[:numel].view(shape)


def mix_small(
    config: ViewConfig, layer: int, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, work: Optional[dict] = None
) -> Tensor:
    """`mix` for every head at once, computed as masked ``baddbmm``, softmax, ``bmm`` where that
    is faster than the fused kernel: small heads (``d_head <= 16``), several queries, float32 or
    float64, no soft cap or float32 / eager scores (the rest takes `mix`). Equal to `mix` within
    float32 rounding.
    ``work``: buffers to compute in (`scratch`); the result is one of them."""
    b, h, n_q, e = q.shape
    small = n_q > 1 and e <= 16 and q.dtype in (torch.float32, torch.float64) and q_pos.ndim == 1
    if not small or config.attn_softcap is not None or config.attn_fp32 or config.attn_eager:
        return mix(config, layer, q, k, v, q_pos)
    k = expand_kv(config, k, h)  # [b, h, pk, e]
    v = expand_kv(config, v, h)  # [b, h, pk, e]
    n_k = k.shape[2]
    mask = attention_mask(config, layer, q_pos, n_k)  # [pq, pk] or None
    bias = q.new_zeros(n_q, n_k) if mask is None else q.new_zeros(n_q, n_k).masked_fill_(~mask, float("-inf"))  # [pq, pk]
    scale = 1.0 / float(config.layer_attn_scales[layer])
    scores = scratch(work, "scores", (b * h, n_q, n_k), q)  # [b*h, pq, pk]
    torch.baddbmm(bias, q.reshape(b * h, n_q, e), k.reshape(b * h, n_k, e).transpose(1, 2), alpha=scale, out=scores)
    weights = torch.softmax(scores, dim=-1, out=scratch(work, "weights", scores.shape, q))  # [b*h, pq, pk]
    z = torch.bmm(weights, v.reshape(b * h, n_k, e), out=scratch(work, "z", (b * h, n_q, e), q))  # [b*h, pq, e]
    return z.view(b, h, n_q, e)  # [b, h, pq, e]
