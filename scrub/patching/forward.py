"""Finish a forward pass from the middle: what a patch changes, and nothing else.

A patch changes the residual stream from one point on (a layer's input, or the point between a
layer's attention and its MLP). `resume` recomputes the model from there, built only from the
`ModelView`'s public component functions (``head_projection``, ``head_output``, ``attn_bias``,
``mlp``, ``unembed``). Two facts keep it cheap:

* in a causal model a patch at position ``p`` changes nothing at positions ``< p``, so only
  positions ``p0..p_end`` are recomputed; keys and values before ``p0`` come from the base run's
  `CleanPass` (``head_k``, ``head_v``);
* nothing after the last position the metric reads matters (``p_end``), and in the last layer
  only the read positions' queries are needed.

Rows of one call may be different patches of different data rows (``rows`` says which row of
the base run each one continues): that is how many patches share one batched call.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scrub.model import CleanPass, ModelView, attention

__all__ = ["resume", "after_attention", "after_layer", "head_block"]


def after_attention(view: ModelView, base: CleanPass, layer: int) -> Tensor:
    """The residual stream after the heads of ``layer`` (``[b, p, d]``), from the stored pass."""
    if base.resid_mid is not None:
        return base.resid_mid[layer]
    return after_layer(view, base, layer)


def after_layer(view: ModelView, base: CleanPass, layer: int) -> Tensor:
    """The residual stream after the whole of ``layer``: the next layer's input, or the final one."""
    if layer + 1 < view.config.n_layers:
        return base.resid_pre[layer + 1]
    return base.resid_final


# The layer's pieces (`scrub.model.attention`): every head in one matmul per port, the sum over
# heads in one matmul through W_O. Without them, the per-head public functions below are used.
_FAST = hasattr(attention, "mix") and all(hasattr(ModelView, f) for f in ("_ln1", "_port"))


def _fast(view: ModelView) -> bool:
    """Whether the all-heads path applies: the attention pieces exist, learned or shortformer
    positions, as many key/value heads as query heads."""
    cfg = view.config
    kv_heads = getattr(cfg, "n_key_value_heads", None)
    return _FAST and cfg.positional in ("standard", "shortformer") and kv_heads in (None, cfg.n_heads)


def _all_heads(view: ModelView, base: CleanPass, rows: Tensor, layer: int, x: Tensor, p0: int, q_index: Optional[Tensor]) -> Tensor:
    """`head_block` for every head at once, summed over heads (plus ``b_O``)."""
    n_x = x.shape[1]
    positions = torch.arange(p0, p0 + n_x, device=view.device)  # [len]
    x_n = view._ln1(layer, x)  # [b, len, d] one LayerNorm for the three ports
    q_in = x_n if q_index is None else x_n[:, q_index]  # [b, q, d]
    q_pos = positions if q_index is None else positions[q_index]  # [q]
    heads = slice(None)
    q = view._port(layer, heads, "q", q_in, q_pos)  # [b, H, q, e]
    k = view._port(layer, heads, "k", x_n, positions)  # [b, H, len, e] (as many key/value heads: see _fast)
    v = view._port(layer, heads, "v", x_n, positions)  # [b, H, len, e]
    if p0 > 0:
        k = torch.cat([base.head_k[layer][rows, :p0].transpose(1, 2), k], dim=2)  # [b, H, p0+len, e]
        v = torch.cat([base.head_v[layer][rows, :p0].transpose(1, 2), v], dim=2)  # [b, H, p0+len, e]
    z = attention.mix(view.config, layer, q, k, v, q_pos)  # [b, H, q, e]
    out = z.transpose(1, 2).flatten(2) @ view.W_O[layer].flatten(0, 1)  # [b, q, d]
    return view.attn_write(layer, out)


def head_block(
    view: ModelView,
    base: CleanPass,
    rows: Tensor,
    layer: int,
    x: Float[Tensor, "b p d"],
    p0: int,
    q_index: Optional[Tensor] = None,
    fixed: Optional[Mapping[int, Tensor]] = None,
) -> Float[Tensor, "b q d"]:
    """Every head of ``layer`` (plus ``b_O``) on the residual stream ``x`` at positions
    ``p0..p0+len-1``; queries at ``q_index`` (offsets into ``x``; default: every one). Keys and
    values before ``p0`` come from ``base`` rows ``rows``. ``fixed[h]`` replaces head ``h``'s
    output (``[b, len, d]``, at the positions of ``x``)."""
    n_x = x.shape[1]
    if not fixed and _fast(view):
        return _all_heads(view, base, rows, layer, x, p0, q_index)
    positions = torch.arange(p0, p0 + n_x, device=view.device)  # [len]
    q_pos = positions if q_index is None else positions[q_index]  # [q]
    x_q = x if q_index is None else x[:, q_index]  # [b, q, d]
    total = None
    for h in range(view.config.n_heads):
        if fixed is not None and h in fixed:
            out = fixed[h] if q_index is None else fixed[h][:, q_index]  # [b, q, d]
        else:
            q = view.head_projection(layer, h, "q", x_q, q_pos)  # [b, q, e]
            k = view.head_projection(layer, h, "k", x, positions)  # [b, len, e]
            v = view.head_projection(layer, h, "v", x, positions)  # [b, len, e]
            if p0 > 0:
                k = torch.cat([base.head_k[layer][rows, :p0, h], k], dim=1)  # [b, p0+len, e]
                v = torch.cat([base.head_v[layer][rows, :p0, h], v], dim=1)  # [b, p0+len, e]
            out = view.head_output(layer, h, q, k, v, q_pos)  # [b, q, d]
        total = out if total is None else total + out
    return view.attn_write(layer, total)  # [b, q, d]


def resume(
    view: ModelView,
    base: CleanPass,
    rows: Int[Tensor, "b"],
    layer: int,
    stage: str,
    x: Float[Tensor, "b n d"],
    p0: int,
    read: Int[Tensor, "r"],
    heads_fixed: Optional[Mapping[int, Mapping[int, Tensor]]] = None,
    mlp_fixed: Optional[Mapping[int, Tensor]] = None,
    final_delta: Optional[Tensor] = None,
) -> Float[Tensor, "b r v"]:
    """Logits at the absolute positions ``read`` after continuing the residual stream ``x``.

    Args:
        view: the model.
        base: the stored pass the patched rows continue (keys/values before ``p0``).
        rows: for each row of ``x``, its row in ``base``.
        layer, stage: where ``x`` sits: ``"pre"`` (the input of ``layer``), ``"mid"`` (after the
            heads of ``layer``, before its MLP) or ``"post"`` (after ``layer``; ``layer`` may be
            ``n_layers - 1``, then ``x`` is the final stream). A parallel-block model's MLP reads
            the layer's input, not the stream after its heads: start those at ``"pre"`` or ``"post"``.
        x: the residual stream at positions ``p0..p0+n-1``; it must reach ``max(read)``.
        p0: the first position held in ``x`` (0 for a non-causal model).
        read: absolute positions whose logits are returned.
        heads_fixed, mlp_fixed: outputs that stay fixed (path patching's receivers), per layer
            (and head), at the positions of ``x``.
        final_delta: added to the final stream (at the positions of ``x``) before unembedding.
    """
    n_layers = view.config.n_layers
    heads_fixed = heads_fixed or {}
    mlp_fixed = mlp_fixed or {}
    index = read.to(view.device) - p0  # [r] offsets into x
    start = layer + 1 if stage == "post" else layer
    if final_delta is not None:
        final_delta = final_delta[:, index]  # [b, r, d]
    if start >= n_layers:  # nothing left but the unembedding
        x = x[:, index]
    for current in range(start, n_layers):
        last = current == n_layers - 1
        x_in = x[:, index] if last else x  # [b, q, d] the layer's input (a parallel block's MLP reads it)
        if not (current == layer and stage == "mid"):
            q_index = index if last else None
            attn = head_block(view, base, rows, current, x, p0, q_index, heads_fixed.get(current))  # [b, q, d]
            x = x_in + attn  # [b, q, d]
        else:
            x = x_in  # [b, r, d]
        if not view.config.attn_only:
            if current in mlp_fixed:
                fixed = mlp_fixed[current]
                x = x + (fixed[:, index] if last else fixed)  # [b, q, d]
            else:
                x = x + view.mlp(current, x_in if view.config.parallel_blocks else x)  # [b, q, d]
    if final_delta is not None:
        x = x + final_delta
    return view.unembed(x)  # [b, r, v]
