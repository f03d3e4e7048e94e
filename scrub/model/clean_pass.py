"""`CleanPass`: every component output and port input of one unscrubbed forward pass of a view."""

from __future__ import annotations

from typing import Optional

import attrs
from jaxtyping import Float
from torch import Tensor

__all__ = ["CleanPass"]


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
