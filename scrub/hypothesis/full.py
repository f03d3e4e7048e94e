"""`full(model)`: the whole model as a hypothesis, the start point of a search.

Every component that writes into the residual stream (the token and position embeddings, every
head, every MLP) is claimed `EXACT` into every port of every component downstream of it (``q``,
``k``, ``v`` of later heads, ``in`` of later MLPs) and into the output. Every input of every node
is then a claimed child on the node's own datum, and every datum is the reference row, so
scrubbing it recovers 100% of the loss by the identity (up to float rounding: the residual
decomposition subtracts and adds the same outputs).

Size. The DAG has one claim per component and ``O(components^2 * ports)`` edges, but scrubbing
treeifies it: every path from a claim to the output is its own tree node, and the number of
paths grows exponentially with depth (`tree_size` counts them without building the tree). The
planner draws an "other" datum per tree node, so the engine cannot share copies of one component
on different paths even though all their inputs are claimed. Practical: 2-layer models with a
handful of heads (hundreds of tree nodes); 3 layers of 4 heads is ~10^4 nodes; GPT-2 small's 12
layers are far out of reach. Start a search on a larger model from a hand-written hypothesis, or
from `full` restricted to the last few layers (``layers=``).
"""

from __future__ import annotations

from typing import Iterable, Optional

import networkx as nx

from scrub.components import MLP, Component, Embed, Head, PosEmbed, is_upstream, ports_of, stage
from scrub.data import EXACT
from scrub.errors import HypothesisError
from scrub.hypothesis.shape import ModelShape

__all__ = ["full", "components_of", "tree_size"]


def _has_pos_embed(model, shape: ModelShape) -> bool:
    if shape.shortformer:
        return False
    cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
    if cfg is None:  # a bare ModelShape: learned positions unless shortformer
        return True
    kind = getattr(cfg, "positional_embedding_type", getattr(cfg, "positional", "standard"))
    return kind == "standard"


def components_of(model, layers: Optional[Iterable[int]] = None) -> list[Component]:
    """Every component of ``model`` that writes into the residual stream, upstream first.

    ``layers`` keeps the heads and MLPs of those layers only (embeddings are always kept)."""
    shape = ModelShape.of(model)
    keep = set(range(shape.n_layers)) if layers is None else {int(x) for x in layers}
    bad = sorted(x for x in keep if not 0 <= x < shape.n_layers)
    if bad:
        raise HypothesisError(
            f"Hypothesis.full(layers={sorted(keep)}): layers {bad} do not exist; the model has layers "
            f"0..{shape.n_layers - 1}"
        )
    found: list[Component] = [Embed()]
    if _has_pos_embed(model, shape):
        found.append(PosEmbed())
    for layer in range(shape.n_layers):
        if layer not in keep:
            continue
        found.extend(Head(layer, h) for h in range(shape.n_heads))
        if not shape.attn_only:
            found.append(MLP(layer))
    return sorted(found, key=lambda c: stage(c, shape.n_layers, shape.parallel_blocks))


def full(cls, model, name: str = "full model", layers: Optional[Iterable[int]] = None):
    """The whole model as a hypothesis of class ``cls`` (see the module docstring).

    Claims are created from the output downwards (so a claim's parents exist when it is made);
    each claim is named after its component and feeds every port of every claimed component
    downstream of it, and the output.
    """
    shape = ModelShape.of(model)
    comps = components_of(model, layers)
    h = cls(name)
    out = h.output()
    made = []  # (component, claim), downstream first
    for comp in reversed(comps):
        into = [(out, "in")]
        for parent_comp, parent in made:
            if is_upstream(comp, parent_comp, shape.n_layers, shape.parallel_blocks):
                into.extend((parent, port) for port in ports_of(parent_comp))
        made.append((comp, h.claim(comp, EXACT, into=into)))
    return h


def tree_size(h) -> int:
    """The number of nodes of ``h``'s treeified form, counted on the DAG (no tree is built)."""
    h.validate_structure()
    count: dict = {}
    for claim in nx.topological_sort(h.graph):  # edges run child -> parent: children first
        count[claim] = 1 + sum(count[e.child] for e in h.children(claim))
    return count[h.root]
