"""Knock-outs and direct effects for the compensation check (DESIGN.md section 2).

The compensation check asks whether ``b`` backs ``a`` up: knock ``a`` out (its output, on every
path, is resampled from a random row) and compare ``b``'s *direct effect* (the change in the
metric when only the path ``b -> output`` is resampled) with and without the knock-out. This is
the IOI paper's test for backup name movers, run on the `ModelView`.
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scrub.components import MLP, Component, Embed, Head
from scrub.model import CleanPass, ModelView

__all__ = ["ablated_logits"]


def _replace(current: Tensor, random: Tensor, component: Optional[Component], layer: int, kind: type) -> Tensor:
    """``current`` with ``component``'s slice taken from ``random`` when it is of ``kind`` and ``layer``."""
    if not isinstance(component, kind):
        return current
    if isinstance(component, Head) and component.layer == layer:
        current = current.clone()
        current[:, :, component.head] = random[:, :, component.head]  # [n, p, H, d]
        return current
    if isinstance(component, MLP) and component.layer == layer:
        return random
    return current


def _piece(value: Tensor, component: Component) -> Tensor:
    return value[:, :, component.head] if isinstance(component, Head) else value


def _direct_head(view: ModelView, layer: int, heads: Tensor, random: Tensor, head: Head) -> Tensor:
    """How the final residual changes when only ``head``'s direct path reads its output on the
    random rows: its difference, or with post-norms (Gemma-2, docs/post-norms.md) the layer's write
    re-normalised with that head swapped, ``N(S - o_h + o_h') - N(S)``."""
    if not view.config.post_norms:
        return _piece(random, head) - _piece(heads, head)
    swapped = heads.clone()  # [n, p, H, d]
    swapped[:, :, head.head] = random[:, :, head.head]
    return view.attn_write(layer, swapped.sum(2)) - view.attn_write(layer, heads.sum(2))  # [n, p, d]


@torch.no_grad()
def ablated_logits(
    view: ModelView,
    tokens: Int[Tensor, "n p"],
    random: CleanPass,
    *,
    knock_out: Optional[Component] = None,
    direct: Optional[Component] = None,
) -> Float[Tensor, "n p vocab"]:
    """Logits with ``knock_out``'s output replaced everywhere by its output on random rows,
    and ``direct``'s contribution to the final residual (only) replaced by its output there.

    Args:
        view: the model.
        tokens: the reference rows.
        random: the clean pass of one random row per reference row (shared across conditions).
        knock_out: the component whose output is resampled on every path (``None``: none).
        direct: the component whose direct path to the output is resampled (``None``: none).
    """
    embed = random.embed if isinstance(knock_out, Embed) else view.embed(tokens)  # [n, p, d]
    # positions are the same in every row, so the positional embedding needs no resampling
    resid = embed + random.pos  # [n, p, d]
    direct_delta = random.embed - embed if isinstance(direct, Embed) else torch.zeros_like(resid)
    for layer in range(view.config.n_layers):
        layer_in = resid  # [n, p, d] what a parallel block's MLP reads (GPT-J, parallel GPT-NeoX)
        heads = view.all_heads(layer, resid, resid, resid)  # [n, p, H, d]
        heads = _replace(heads, random.head_out[layer], knock_out, layer, Head)
        if isinstance(direct, Head) and direct.layer == layer:
            direct_delta = direct_delta + _direct_head(view, layer, heads, random.head_out[layer], direct)
        if view.config.post_norms:  # Gemma-2: the layer writes N(sum of heads + b_O)
            resid = resid + view.attn_write(layer, heads.sum(2))
        else:
            resid = resid + heads.sum(2) + view.attn_bias(layer)
        if not view.config.attn_only:
            out = view.mlp(layer, layer_in if view.config.parallel_blocks else resid)  # [n, p, d]
            out = _replace(out, random.mlp_out[layer], knock_out, layer, MLP)
            if isinstance(direct, MLP) and direct.layer == layer:
                direct_delta = direct_delta + random.mlp_out[layer] - out
            resid = resid + out
    return view.unembed(resid + direct_delta)  # [n, p, vocab]
