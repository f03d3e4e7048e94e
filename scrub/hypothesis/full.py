"""`full(model)`: the whole model as a hypothesis, the start point of a search.

Every component that writes into the residual stream (the token and position embeddings, every
head, every MLP) is claimed `EXACT` into every port of every component downstream of it (``q``,
``k``, ``v`` of later heads, ``in`` of later MLPs) and into the output. Every input of every node
is then a claimed child on the node's own datum, and every datum is the reference row, so
scrubbing it recovers 100% of the loss by the identity (up to float rounding: the residual
decomposition subtracts and adds the same outputs).

Size. The DAG has one claim per component and ``O(components^2 * ports)`` edges (GPT-2 small's
shape: 158 claims and the output, 32,936 edges). Treeified by the letter, every path from a claim
to the output is its own tree node, and the number of paths grows exponentially with depth
(``tree_size(h, collapse=False)``: 174 / 12,828 / 949,224 nodes for the last 1 / 2 / 3 layers of
a 12 x 12 model, ~6 x 10^22 for all 12). But every claim of `full` is *complete*: its whole
upstream is claimed EXACT, so each tree copy computes the model's clean output on its datum.
`full` records the model's `ModelShape`, and treeification keeps a complete claim as a leaf on
its datum (`scrub.hypothesis.collapse`): the tree of `full` is the output plus one leaf per
component (159 nodes for GPT-2 small), whatever the depth. The collapse changes only the random
stream (a collapsed subtree draws no unused "other" data). ``layers=`` keeps some layers only;
their claims then miss part of their upstream, are not complete, and are not collapsed.

Search. `scrub.search` from `full` removes edges from the output backwards: a claim that lost an
edge, and every claim above it, is no longer complete and is expanded, so a candidate's tree
holds one copy of each modified claim per kept path from it to the output; everything below the
claim being decided is still complete and collapses. What bounds a search of a deep model is then
the copying of the hypothesis per candidate (O(edges) each) and the number of candidates, which
depends on tau (`benchmarks/bench_search.py` measures both).
"""

from __future__ import annotations

from typing import Iterable, Optional

import networkx as nx

from scrub.components import MLP, Component, Head, is_upstream, ports_of
from scrub.data import EXACT
from scrub.errors import HypothesisError
from scrub.hypothesis import building, graph
from scrub.hypothesis.shape import ModelShape

__all__ = ["full", "components_of", "tree_size"]


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
    return [c for c in shape.writers() if not isinstance(c, (Head, MLP)) or c.layer in keep]


def full(cls, model, name: str = "full model", layers: Optional[Iterable[int]] = None):
    """The whole model as a hypothesis of class ``cls`` (see the module docstring), recorded for
    the model's shape.

    Claims are created from the output downwards (so a claim's parents exist when it is made);
    each claim is named after its component and feeds every port of every claimed component
    downstream of it, and the output.
    """
    shape = ModelShape.of(model)
    comps = components_of(model, layers)
    h = cls(name)
    h._shape = shape
    out = h.output()
    made = []  # (component, claim), downstream first
    for comp in reversed(comps):
        into = [(out, "in")]
        for parent_comp, parent in made:
            if is_upstream(comp, parent_comp, shape.n_layers, shape.parallel_blocks):
                into.extend((parent, port) for port in ports_of(parent_comp))
        claim = building.add_claim(h, comp, EXACT, str(comp))
        for parent, port in into:  # one edge per (parent, port): distinct by construction
            building.add_edge(h, claim, parent, port, None, check=False)
        made.append((comp, claim))
    return h


def tree_size(h, collapse: bool = True) -> int:
    """The number of nodes of ``h``'s treeified form, counted on the DAG (no tree is built).

    ``collapse=False`` counts the tree without collapsing complete claims (every path its own
    node, as if ``h`` recorded no model shape): the size the collapse avoids."""
    h.validate_structure()
    leaves = graph.collapsible(h) if collapse else frozenset()
    count: dict = {}
    for claim in nx.topological_sort(h._graph):  # edges run child -> parent: children first
        if claim in leaves:
            count[claim] = 1
        else:
            count[claim] = 1 + sum(count[child] for child, _ in h._graph.in_edges(claim))
    return count[h.root]
