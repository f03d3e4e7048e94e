"""Checking a hypothesis against a model's shape: components it has, edges that run downstream,
positions within the context. Raised before any forward pass."""

from __future__ import annotations

from typing import Optional

from scrub.components import MLP, Component, Head, PosEmbed, is_upstream
from scrub.errors import ComponentError, HypothesisError
from scrub.hypothesis import graph
from scrub.hypothesis.shape import ModelShape
from scrub.hypothesis.values import HypothesisState

__all__ = ["validate", "check_component"]


def validate(h: HypothesisState, model, n_pos: Optional[int] = None) -> None:
    """Check ``h`` against ``model`` (anything `ModelShape.of` reads) and a sequence length."""
    shape = ModelShape.of(model)
    recorded = getattr(h, "_shape", None)
    if recorded is not None and recorded != shape:
        raise HypothesisError(
            f"{h.name}: rule: a hypothesis recorded for a model shape (Hypothesis.full, or "
            f"Hypothesis(name, shape=...)) is scrubbed on a model of that shape, since which claims are "
            f"complete depends on it; offender: recorded {recorded}, model {shape}; fix: build the "
            f"hypothesis for this model (e.g. Hypothesis.full(model))"
        )
    graph.check_structure(h)
    for claim in h._claims[1:]:
        check_component(claim.component, shape)
    limit = shape.n_ctx if n_pos is None else min(n_pos, shape.n_ctx)
    for edge in graph.edges(h):
        child, parent = edge.child.component, edge.parent.component
        if not is_upstream(child, parent, shape.n_layers, shape.parallel_blocks):
            raise HypothesisError(f"{h.name}: {edge}: {child} is not upstream of {parent}; {_upstream_rule(shape)}")
        if edge.positions is not None and max(edge.positions) >= limit:
            raise HypothesisError(
                f"{h.name}: {edge}: position {max(edge.positions)} is out of range; "
                f"sequences have {limit} positions (0..{limit - 1})"
            )


def _upstream_rule(shape: ModelShape) -> str:
    if shape.parallel_blocks:
        return (
            "in this model attention and MLP of one layer run in parallel on the same residual stream, "
            "so a head feeds heads and MLPs of later layers only, an MLP feeds components of later "
            "layers, and both feed the output (claim the head into an MLP of a later layer)"
        )
    return (
        "a component can only feed components of later layers "
        "(a head feeds heads of later layers, MLPs of its layer or later, and the output)"
    )


def check_component(component: Component, shape: ModelShape) -> None:
    """Refuse a component the model does not have."""
    if isinstance(component, Head):
        if component.layer >= shape.n_layers or component.head >= shape.n_heads:
            raise ComponentError(
                f"{component}: the model has {shape.n_layers} layers of {shape.n_heads} heads "
                f"(Head(0..{shape.n_layers - 1}, 0..{shape.n_heads - 1}))"
            )
    elif isinstance(component, MLP):
        if shape.attn_only:
            raise ComponentError(f"{component}: the model is attention-only and has no MLPs")
        if component.layer >= shape.n_layers:
            raise ComponentError(f"{component}: the model has {shape.n_layers} layers (MLP(0..{shape.n_layers - 1}))")
    elif isinstance(component, PosEmbed) and not shape.has_pos_embed:
        why = _NO_POS_EMBED.get(shape.positional, "which are not added to the residual stream")
        raise ComponentError(
            f"PosEmbed: this model uses {shape.positional} positions, {why} (rule: PosEmbed() is the "
            f"learned positional embedding added to the residual stream; offender: the PosEmbed() "
            f"claim); fix: drop the PosEmbed claim"
        )


_NO_POS_EMBED = {
    "shortformer": (
        "which are added inside each attention layer, not to the residual stream; they are the "
        "same for every input, so there is nothing to claim"
    ),
    "rotary": (
        "which rotate each head's queries and keys and add nothing to the residual stream (a "
        "head's use of position is part of the head)"
    ),
}
