"""Per-token pieces of the model view computed into reused buffers: the patching fast path.

`scrub.patching.forward.resume_at` continues many patched forward passes at once as a packed list
of (row, position) tokens. These functions give it what `ModelView` gives per component, with the
same arithmetic, but for single residual-stream vectors ``[t, d]`` and written into buffers the
sweep's calls share (a sweep makes many calls; fresh multi-megabyte tensors cost page faults):

* `qkv_weights` / `qkv`: every head's query, key and value in one matmul, interleaved by head;
* `ports`: every head's query, key and value of a ``[b, n, d]`` stream (the general path);
* `mlp_into`: a plain MLP into given buffers, its activation in place.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from scrub.model.rotary import rotate
from scrub.model.view import ModelView

__all__ = ["qkv_weights", "qkv", "ports", "mlp_into"]

# In-place forms of `scrub.model.mlps.ACTIVATIONS` (the same kernels), for `mlp_into`.
IN_PLACE = {
    "relu": torch.relu_,
    "gelu": lambda h: torch.ops.aten.gelu_(h),
    "gelu_pytorch_tanh": lambda h: torch.ops.aten.gelu_(h, approximate="tanh"),
    "silu": lambda h: torch.nn.functional.silu(h, inplace=True),
}


def qkv_weights(view: ModelView, layer: int) -> tuple[Tensor, Tensor]:
    """``W_Q``, ``W_K``, ``W_V`` of ``layer`` side by side for one matmul, and their biases: with
    one key/value head per query head interleaved by head, ``[d, H * 3 * e]`` (head ``h``'s
    query, key and value columns together: the layout `qkv` writes); with grouped key/value
    heads ``[d, (H + 2 Hk) e]`` (queries, then keys, then values), each key/value head computed
    once and repeated by `qkv`."""
    W_Q, W_K, W_V = view.W_Q[layer], view.W_K[layer], view.W_V[layer]  # [H, d, e], [Hk, d, e], [Hk, d, e]
    b_Q, b_K, b_V = view.b_Q[layer], view.b_K[layer], view.b_V[layer]  # [H, e], [Hk, e], [Hk, e]
    if view.config.kv_group == 1:
        W = torch.stack([W_Q, W_K, W_V], dim=1)  # [H, 3, d, e]
        return W.permute(2, 0, 1, 3).reshape(W.shape[2], -1), torch.stack([b_Q, b_K, b_V], dim=1).flatten()
    W = torch.cat([W_Q, W_K, W_V])  # [H + 2 Hk, d, e]
    return W.permute(1, 0, 2).reshape(W.shape[1], -1), torch.cat([b_Q, b_K, b_V]).flatten()


def qkv(
    view: ModelView, layer: int, x: Tensor, positions: Tensor, out: Tensor,
    weights: Optional[tuple[Tensor, Tensor]] = None,
) -> Tensor:
    """Every query head's q, k and v of ``layer`` for single residual-stream vectors ``x [t, d]``
    at ``positions [t]``, written into ``out [t, H, 3, e]`` (returned): ``out[:, h, 0]`` is head
    ``h``'s query, ``1`` its key, ``2`` its value (grouped-query models: its key/value head's).
    What the view's projection gives for each port, with one matmul for the three ports where
    they read the same input (not shortformer, whose q and k add ``W_pos``); ``weights``:
    `qkv_weights` of ``layer``."""
    c = view.config
    x_n = view._ln1(layer, x)  # [t, d]
    pos = positions[:, None]  # [t, 1]
    if c.positional == "shortformer":
        for i, port in enumerate(("q", "k", "v")):
            y = view._port(layer, slice(None), port, x_n[:, None], pos)  # [t, h, 1, e]
            out[:, :, i] = y[:, :, 0].repeat_interleave(c.n_heads // y.shape[1], dim=1)  # [t, H, e] (k, v: per query head)
        return out
    W, b = qkv_weights(view, layer) if weights is None else weights  # [d, H*3*e] or [d, (H + 2 Hk) e]
    t, H, group = x.shape[0], c.n_heads, c.kv_group
    if group == 1:
        torch.addmm(b, x_n, W, out=out.view(t, -1))  # [t, H*3*e]
    else:  # each key/value head once, then repeated for the query heads that read it
        y = torch.addmm(b, x_n, W).view(t, -1, c.d_head)  # [t, H + 2 Hk, e]
        hk = (y.shape[1] - H) // 2
        out[:, :, 0] = y[:, :H]
        for i, part in ((1, y[:, H : H + hk]), (2, y[:, H + hk :])):  # [t, Hk, e]
            out[:, :, i].view(t, hk, group, c.d_head).copy_(part[:, :, None].expand(t, hk, group, c.d_head))
    if c.positional == "rotary":
        assert c.rotary_dim is not None  # checked by ViewConfig
        for i in (0, 1):  # q and k, laid out [t, H, 1, e] as `attention.project` gives them
            port = out[:, :, i : i + 1]
            port.copy_(rotate(port, pos, c.rotary_dim, c.rotary_base, c.rotary_pairing, view.rotary_inv_freq))
    return out


def ports(
    view: ModelView, layer: int, x: Tensor, positions: Tensor, q_index: Optional[Tensor] = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Every head's query, key and value of ``layer`` on the residual stream ``x [b, n, d]`` at
    ``positions [n]``, one norm for the three ports: ``[b, H, q, e]``, ``[b, Hk, n, e]``,
    ``[b, Hk, n, e]``; queries only at the offsets ``q_index`` into ``x`` when given (else at
    every one). What `ModelView.head_projection` gives per head, for all heads at once."""
    x_n = view._ln1(layer, x)  # [b, n, d]
    q_in = x_n if q_index is None else x_n[:, q_index]  # [b, q, d]
    q_pos = positions if q_index is None else positions[q_index]  # [q]
    heads = slice(None)
    q = view._port(layer, heads, "q", q_in, q_pos)  # [b, H, q, e]
    k = view._port(layer, heads, "k", x_n, positions)  # [b, Hk, n, e]
    v = view._port(layer, heads, "v", x_n, positions)  # [b, Hk, n, e]
    return q, k, v


def mlp_into(view: ModelView, layer: int, x: Tensor, hidden: Tensor, out: Tensor) -> Tensor:
    """`ModelView.mlp` of tokens ``x [t, d]`` computed into the given buffers (``hidden [t, d_mlp]``,
    ``out [t, d]``, returned), the activation in place: the same arithmetic without allocating.
    Plain MLPs with an activation that has an in-place form (`IN_PLACE`); anything else is
    `ModelView.mlp`."""
    c = view.config
    act = IN_PLACE.get(c.act_fn or "relu")
    if act is None or c.gated_mlp or view.W_in is None or view.b_in is None or view.b_out is None:
        return view.mlp(layer, x)
    assert view.W_out is not None
    x_n = view._layer_norm("ln2", layer, x)  # [t, d_model]
    act(torch.addmm(view.b_in[layer], x_n, view.W_in[layer], out=hidden))  # [t, d_mlp]
    torch.addmm(view.b_out[layer], hidden, view.W_out[layer], out=out)  # [t, d_model]
    if c.post_norms:
        assert view.ln_mlp_out_w is not None
        return view._norm(out, view.ln_mlp_out_w[layer], None)  # [t, d_model]
    return out
