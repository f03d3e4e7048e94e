"""Reading a TransformerLens ``HookedTransformer``'s weights into the tensors of a `ModelView`."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from scrub.model.config import ViewConfig

__all__ = ["weights_from_hooked", "expected_shapes"]


def _stack(tensors: list[Tensor]) -> Tensor:
    return torch.stack([t.detach() for t in tensors]).clone()


def _copy(t: Tensor) -> Tensor:
    return t.detach().clone()


def weights_from_hooked(model: Any, config: ViewConfig) -> dict[str, Optional[Tensor]]:
    """Detached copies of ``model``'s weights, stacked over layers, by `ModelView` field name."""
    blocks = list(model.blocks)
    with torch.no_grad():
        weights: dict[str, Optional[Tensor]] = dict(
            W_E=_copy(model.embed.W_E),
            W_pos=_copy(model.pos_embed.W_pos),
            W_Q=_stack([b.attn.W_Q for b in blocks]),
            b_Q=_stack([b.attn.b_Q for b in blocks]),
            W_K=_stack([b.attn.W_K for b in blocks]),  # GQA modules expand to H heads
            b_K=_stack([b.attn.b_K for b in blocks]),
            W_V=_stack([b.attn.W_V for b in blocks]),
            b_V=_stack([b.attn.b_V for b in blocks]),
            W_O=_stack([b.attn.W_O for b in blocks]),
            b_O=_stack([b.attn.b_O for b in blocks]),
            W_U=_copy(model.unembed.W_U),
            b_U=_copy(model.unembed.b_U),
        )
        if not config.attn_only:
            weights.update(
                W_in=_stack([b.mlp.W_in for b in blocks]),
                b_in=_stack([b.mlp.b_in for b in blocks]),
                W_out=_stack([b.mlp.W_out for b in blocks]),
                b_out=_stack([b.mlp.b_out for b in blocks]),
            )
        if config.normalization == "LN":
            weights.update(
                ln1_w=_stack([b.ln1.w for b in blocks]),
                ln1_b=_stack([b.ln1.b for b in blocks]),
                ln_final_w=_copy(model.ln_final.w),
                ln_final_b=_copy(model.ln_final.b),
            )
            if not config.attn_only:
                weights.update(
                    ln2_w=_stack([b.ln2.w for b in blocks]),
                    ln2_b=_stack([b.ln2.b for b in blocks]),
                )
    return weights


def expected_shapes(c: ViewConfig) -> dict[str, Optional[tuple[int, ...]]]:
    """The shape of every `ModelView` weight for config ``c`` (``None``: the weight is absent)."""
    L, H, Hk, d, e = c.n_layers, c.n_heads, c.n_kv_heads, c.d_model, c.d_head
    m = c.d_mlp
    mlp = not c.attn_only
    gain = c.normalization in ("LN", "layernorm", "rms", "rms_1p")
    shift = c.normalization in ("LN", "layernorm")
    return {
        "W_E": (c.d_vocab, d),
        "W_pos": (c.n_ctx, d) if c.positional in ("standard", "shortformer") else None,
        "W_Q": (L, H, d, e),
        "b_Q": (L, H, e),
        "W_K": (L, Hk, d, e),
        "b_K": (L, Hk, e),
        "W_V": (L, Hk, d, e),
        "b_V": (L, Hk, e),
        "W_O": (L, H, e, d),
        "b_O": (L, d),
        "W_U": (d, c.d_vocab_out),
        "b_U": (c.d_vocab_out,),
        "W_in": (L, d, m) if mlp else None,
        "b_in": (L, m) if mlp else None,
        "W_gate": (L, d, m) if mlp and c.gated_mlp else None,
        "b_gate": (L, m) if mlp and c.gated_mlp else None,
        "W_out": (L, m, d) if mlp else None,
        "b_out": (L, d) if mlp else None,
        "ln1_w": (L, d) if gain else None,
        "ln1_b": (L, d) if shift else None,
        "ln2_w": (L, d) if gain and mlp else None,
        "ln2_b": (L, d) if shift and mlp else None,
        "ln_attn_out_w": (L, d) if c.post_norms else None,
        "ln_mlp_out_w": (L, d) if c.post_norms and mlp else None,
        "ln_final_w": (d,) if gain else None,
        "ln_final_b": (d,) if shift else None,
        "rotary_inv_freq": (c.rotary_dim // 2,) if c.positional == "rotary" and c.rotary_dim else None,
    }
