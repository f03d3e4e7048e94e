"""Per-token pieces of the model view computed into reused buffers: the patching fast path.

`scrub.patching.forward.resume_at` continues many patched forward passes at once as a packed list
of (row, position) tokens. These functions give it what `ModelView` gives per component, with the
same arithmetic, but for single residual-stream vectors ``[t, d]`` and written into buffers the
sweep's calls share (a sweep makes many calls; fresh multi-megabyte tensors cost page faults):

* `qkv_weights` / `qkv`: every head's query, key and value in one matmul;
* `mlp_into`: a plain MLP into given buffers, its activation in place.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from scrub.model.rotary import rotate
from scrub.model.view import ModelView

__all__ = ["qkv_weights", "qkv", "mlp_into"]

# In-place forms of `scrub.model.mlps.ACTIVATIONS` (the same kernels), for `mlp_into`.
IN_PLACE = {
    "relu": torch.relu_,
    "gelu": lambda h: torch.ops.aten.gelu_(h),
    "gelu_pytorch_tanh": lambda h: torch.ops.aten.gelu_(h, approximate="tanh"),
    "silu": lambda h: torch.nn.functional.silu(h, inplace=True),
}


def qkv_weights(view: ModelView, layer: int) -> tuple[Tensor, Tensor]:
    """``W_Q``, ``W_K``, ``W_V`` of ``layer`` side by side, ``[d, (H + 2 Hk) e]``, and their
    biases ``[(H + 2 Hk) e]``: one matmul gives every head's q, k and v."""
    W = torch.cat([view.W_Q[layer], view.W_K[layer], view.W_V[layer]])  # [H + 2 Hk, d, e]
    b = torch.cat([view.b_Q[layer], view.b_K[layer], view.b_V[layer]])  # [H + 2 Hk, e]
    return W.permute(1, 0, 2).reshape(W.shape[1], -1), b.flatten()


def qkv(
    view: ModelView, layer: int, x: Tensor, positions: Tensor, out: Optional[Tensor] = None,
    weights: Optional[tuple[Tensor, Tensor]] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """q, k and v of every head of ``layer`` for single residual-stream vectors ``x [t, d]``
    at ``positions [t]``: ``[t, H, e]``, ``[t, Hk, e]``, ``[t, Hk, e]``. What the view's
    projection gives for each port, with one matmul for the three ports where they read the same
    input (not shortformer, whose q and k add ``W_pos``), computed into ``out [t, (H + 2 Hk) e]``
    when given (the results are views of it); ``weights``: `qkv_weights` of ``layer``."""
    c = view.config
    x_n = view._ln1(layer, x)[:, None]  # [t, 1, d]
    pos = positions[:, None]  # [t, 1]
    if c.positional == "shortformer":
        q, k, v = (view._port(layer, slice(None), port, x_n, pos) for port in ("q", "k", "v"))  # [t, h, 1, e]
        return q[:, :, 0], k[:, :, 0], v[:, :, 0]
    W, b = qkv_weights(view, layer) if weights is None else weights  # [d, (H + 2 Hk) e], [(H + 2 Hk) e]
    y = torch.addmm(b, x_n[:, 0], W, out=out)  # [t, (H + 2 Hk) e]
    y = y.view(x.shape[0], -1, 1, c.d_head)  # [t, H + 2 Hk, 1, e] (as `attention.project` lays it out)
    q, k, v = y.split([c.n_heads, view.W_K.shape[1], view.W_K.shape[1]], dim=1)  # [t, h, 1, e]
    if c.positional == "rotary":
        assert c.rotary_dim is not None  # checked by ViewConfig
        q, k = (rotate(t, pos, c.rotary_dim, c.rotary_base, c.rotary_pairing, view.rotary_inv_freq) for t in (q, k))
    return q[:, :, 0], k[:, :, 0], v[:, :, 0]


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
