"""`CleanPass`: every component output and port input of one unscrubbed forward pass of a view, and
`run`, the pass itself (built from the view's component functions)."""

from __future__ import annotations

from typing import Any, Optional

import attrs
import torch
from jaxtyping import Float
from torch import Tensor

from scrub.model import attention
from scrub.model.mlps import linear

__all__ = ["CleanPass", "run"]


@attrs.frozen(eq=False)
class CleanPass:
    """One unscrubbed forward pass: every component's output and every port's input.

    The residual stream decomposes exactly into component outputs (plus attention biases):
    ``resid_pre[l] = embed + pos + sum_{l' < l} (head_out[l'].sum(2) + b_O[l'] + mlp_out[l'])``
    and ``resid_mid[l] = resid_pre[l] + head_out[l].sum(2) + b_O[l]``, with ``b_O`` from
    `ModelView.attn_bias`. In parallel blocks (``config.parallel_blocks``) the MLP reads the
    same residual as the heads: ``resid_mid[l] = resid_pre[l]`` and ``resid_pre[l + 1] =
    resid_pre[l] + attn_out[l] + mlp_out[l]``. With post-norms (``config.post_norms``) the
    attention writes ``attn_out[l] = norm(head_out[l].sum(2) + b_O[l])``, which is not a sum of
    per-head writes: the engines re-normalise that sum per tree node (docs/post-norms.md).

    Attributes:
        embed: token embedding ``[b, p, d_model]``.
        pos: what the positional embedding adds to the residual stream ``[b, p, d_model]``;
            all zeros for shortformer models, whose positions enter only the q/k inputs of heads.
        resid_pre: per layer, the residual stream the heads read ``[b, p, d_model]``.
        resid_mid: per layer, the residual stream the MLP reads (``None`` if attention-only).
        head_out: per layer, every head's output without ``b_O`` ``[b, p, n_heads, d_model]``.
        mlp_out: per layer, the MLP's output (``None`` if attention-only).
        resid_final: the residual stream the output reads ``[b, p, d_model]``.
        logits: ``[b, p, d_vocab_out]`` (``None`` when the pass was asked not to unembed).
        head_q, head_k, head_v: per layer, every head's projected query, key and value
            ``[b, p, n_heads, d_head]`` (`ModelView.head_projection` of the clean inputs: q and
            k rotated for their positions in rotary models; under grouped-query attention the
            key and value of each QUERY head, i.e. of its key/value head, repeated).
        attn_out: per layer, what the attention adds to the residual stream ``[b, p, d_model]``.
    """

    embed: Float[Tensor, "b p d"]
    pos: Float[Tensor, "b p d"]
    resid_pre: tuple[Float[Tensor, "b p d"], ...]
    resid_mid: Optional[tuple[Float[Tensor, "b p d"], ...]]
    head_out: tuple[Float[Tensor, "b p h d"], ...]
    mlp_out: Optional[tuple[Float[Tensor, "b p d"], ...]]
    resid_final: Float[Tensor, "b p d"]
    logits: Optional[Float[Tensor, "b p v"]]
    head_q: tuple[Float[Tensor, "b p h e"], ...] = ()
    head_k: tuple[Float[Tensor, "b p h e"], ...] = ()
    head_v: tuple[Float[Tensor, "b p h e"], ...] = ()
    attn_out: tuple[Float[Tensor, "b p d"], ...] = ()


def run(view: Any, tokens: Tensor, keep: bool, logits: bool = True, positions: Optional[Tensor] = None) -> "CleanPass | Tensor":
    """One forward pass of ``view`` (a `ModelView`) built from its component functions: a `CleanPass` keeping every
    component output and port input (``keep``), or only the logits (at ``positions`` when given;
    ``logits=False`` skips the unembedding). `ModelView.clean_pass` and `ModelView.forward` call it."""
    c = view.config
    embed = view.embed(tokens)  # [b, p, d_model]
    n_rows, n_pos = tokens.shape
    if c.positional == "standard":
        pos = view.pos_embed(n_rows, n_pos)  # [b, p, d_model]
    else:  # shortformer, rotary: positions enter the heads' q/k, not the residual stream
        view._check_positions(n_pos)
        pos = torch.zeros_like(embed)  # [b, p, d_model]
    resid = embed + pos  # [b, p, d_model]
    resid_pre, resid_mid, head_out, mlp_out, attn_out = [], [], [], [], []
    head_q: list[Tensor] = []
    head_k: list[Tensor] = []
    head_v: list[Tensor] = []
    for layer in range(c.n_layers):
        qkv: Optional[list] = [] if keep else None
        z = view._attend(layer, slice(None), resid, resid, resid, keep=qkv)  # [b, H, p, e]
        if keep:
            for store, value in zip((head_q, head_k, head_v), qkv):
                store.append(attention.expand_kv(c, value, c.n_heads).transpose(1, 2))  # [b, p, H, e]
            heads = view._per_head_out(layer, slice(None), z)  # [b, p, H, d_model]
            resid_pre.append(resid)
            head_out.append(heads)
            attn = heads.sum(2)  # [b, p, d_model]
        else:  # every head's W_O (and b_O) in one matmul: the sum over heads, no per-head outputs
            z_flat = z.transpose(1, 2).flatten(2)  # [b, p, H*e]
            attn = linear(z_flat, view.W_O[layer].flatten(0, 1), view.b_O[layer])  # [b, p, d_model]
        written = view.attn_write(layer, attn, with_bias=keep)  # [b, p, d_model]
        if keep:
            attn_out.append(written)
        if c.attn_only:
            resid = resid + written  # [b, p, d_model]
            continue
        mlp_in = resid if c.parallel_blocks else resid + written  # [b, p, d_model]
        out = view.mlp(layer, mlp_in)  # [b, p, d_model]
        if keep:
            resid_mid.append(mlp_in)
            mlp_out.append(out)
        # parallel: (attention + MLP) + residual, the order GPT-NeoX and GPT-J add in
        resid = (written + out) + mlp_in if c.parallel_blocks else mlp_in + out  # [b, p, d_model]
    final = resid if positions is None else resid[:, positions]  # [b, q, d_model]
    out_logits = view.unembed(final) if logits else None  # [b, q, d_vocab_out]
    if not keep:
        return out_logits
    return CleanPass(
        embed=embed,
        pos=pos,
        resid_pre=tuple(resid_pre),
        resid_mid=None if c.attn_only else tuple(resid_mid),
        head_out=tuple(head_out),
        mlp_out=None if c.attn_only else tuple(mlp_out),
        resid_final=resid,
        logits=out_logits,
        head_q=tuple(head_q),
        head_k=tuple(head_k),
        head_v=tuple(head_v),
        attn_out=tuple(attn_out),
    )
