"""Attention of one layer, in the pieces the batched engine needs separately.

A head's output is built in three steps, each a pure function of the `ModelView`'s weights:

1. `normalise`: ``ln1`` of a port input (q, k and v inputs are normalised separately, as
   TransformerLens does with split q/k/v inputs), plus ``W_pos`` on q and k inputs of a
   shortformer model;
2. `project`: the normalised input through ``W_Q``, ``W_K`` or ``W_V`` (and the bias) of the
   selected heads, one matmul for all of them;
3. `mix`: softmax attention of the projected queries over the projected keys (causal mask by
   query position), applied to the projected values: ``z``, before ``W_O``.

Splitting them lets the engine take the projection of a port nobody patched straight from the
clean pass, and evaluate queries at some positions only (``q_pos``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from scrub.errors import ScheduleError

if TYPE_CHECKING:
    from scrub.model.view import ModelView

__all__ = ["normalise", "with_positions", "project", "mix", "query_positions"]

WEIGHTS = {"q": ("W_Q", "b_Q"), "k": ("W_K", "b_K"), "v": ("W_V", "b_V")}


def query_positions(view: "ModelView", q_pos: Optional[Tensor], n_q: int, n_keys: int) -> Tensor:
    """``q_pos`` as a long tensor (``[q]`` or ``[b, q]``); default ``0..n_keys-1``."""
    if q_pos is None:
        if n_q != n_keys:
            raise ScheduleError(
                f"q has {n_q} positions and k/v {n_keys}: pass q_positions to say where the queries sit"
            )
        return torch.arange(n_keys, device=view.device)  # [q]
    q_pos = torch.as_tensor(q_pos, dtype=torch.long, device=view.device)
    if q_pos.ndim not in (1, 2) or q_pos.shape[-1] != n_q:
        raise ScheduleError(f"q_positions must be [q] or [batch, q] with q={n_q}, got {tuple(q_pos.shape)}")
    return q_pos


def normalise(view: "ModelView", layer: int, port: str, x: Tensor, positions: Tensor) -> Tensor:
    """``ln1`` of the port input ``x [b, p, d]`` sitting at ``positions`` (``[p]`` or ``[b, p]``),
    plus ``W_pos`` there for the q and k ports of a shortformer model."""
    return with_positions(view, port, view._ln1(layer, x), positions)


def with_positions(view: "ModelView", port: str, x_n: Tensor, positions: Tensor) -> Tensor:
    """``x_n`` plus ``W_pos[positions]`` for the q and k ports of a shortformer model (else itself)."""
    if view.config.positional == "shortformer" and port in ("q", "k"):
        return x_n + view.W_pos[positions]  # [b, p, d_model]
    return x_n


def project(view: "ModelView", layer: int, heads: slice, port: str, x_n: Tensor) -> Tensor:
    """Normalised input ``x_n [b, p, d]`` through port ``port`` of the heads ``heads``: ``[b, h, p, e]``."""
    w_name, b_name = WEIGHTS[port]
    W = getattr(view, w_name)[layer, heads]  # [h, d_model, e]
    n_h, e = W.shape[0], W.shape[2]
    bias = getattr(view, b_name)[layer, heads].reshape(n_h * e)  # [h*e]
    y = torch.addmm(bias, x_n.reshape(-1, x_n.shape[-1]), W.permute(1, 0, 2).reshape(-1, n_h * e))  # [b*p, h*e]
    return y.reshape(x_n.shape[0], x_n.shape[1], n_h, e).transpose(1, 2)  # [b, h, p, e]


def mix(view: "ModelView", layer: int, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor) -> Tensor:
    """``z [b, h, pq, e]``: queries ``q [b, h, pq, e]`` at ``q_pos`` attend to keys at ``0..pk-1``."""
    mask = None
    if view.config.causal:
        mask = torch.arange(k.shape[2], device=q.device) <= q_pos[..., None]  # [pq, pk] or [b, pq, pk]
        if mask.ndim == 3:
            mask = mask[:, None]  # [b, 1, pq, pk]
    scale = 1.0 / float(view.config.layer_attn_scales[layer])
    # every query sees at least key 0, so no softmax row is empty
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)  # [b, h, pq, e]
