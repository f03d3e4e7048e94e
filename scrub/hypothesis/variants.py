"""Deriving variants of a hypothesis: without some claims, or with only some edges.

A variant is a new hypothesis of the same class; the original is never changed.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import networkx as nx

from scrub.errors import HypothesisError
from scrub.hypothesis import building, graph
from scrub.hypothesis.values import Claim, Edge, HypothesisState

__all__ = ["without", "only_edges", "copy_keeping"]


def without(h: HypothesisState, claims: Iterable[Claim], name: Optional[str] = None) -> HypothesisState:
    """A copy with ``claims`` removed, and every claim that then no longer reaches the output."""
    claims = tuple(claims)
    for c in claims:
        building.check_member(h, c, "without")
        if c.is_output:
            raise HypothesisError(f"{h.name}: the output claim cannot be removed")
    drop = {c.index for c in claims}
    label = name or f"{h.name} - " + ", ".join(c.name for c in claims)
    return copy_keeping(h, lambda e: e.child.index not in drop and e.parent.index not in drop, label)


def only_edges(h: HypothesisState, keep: Iterable[Edge], name: str) -> HypothesisState:
    """A copy keeping just the given edges (and the claims that still reach the output)."""
    keep_set = set(keep)
    return copy_keeping(h, lambda e: e in keep_set, name)


def copy_keeping(h: HypothesisState, keep_edge: Callable[[Edge], bool], name: str) -> HypothesisState:
    """A new hypothesis named ``name`` with the edges ``keep_edge`` accepts and the claims that
    still reach the output through them (same names, features and order)."""
    top = graph.root(h)
    new = type(h)(name)
    mapping = {top.index: new.output()}
    kept = [e for e in graph.edges(h) if keep_edge(e)]
    skeleton = nx.MultiDiGraph()
    skeleton.add_nodes_from(e.child.index for e in kept)
    skeleton.add_node(top.index)
    for e in kept:
        skeleton.add_edge(e.child.index, e.parent.index)
    reaching = nx.ancestors(skeleton, top.index)
    for claim in h._claims[1:]:
        if claim.index in reaching:
            # a claim that loses all its children keeps its meaning: its inputs are resampled,
            # it does not turn into a leaf (which would claim everything upstream of it)
            orphaned = bool(graph.children(h, claim)) and skeleton.in_degree(claim.index) == 0
            mapping[claim.index] = building.add_claim(
                new, claim.component, claim.feature, claim.name, claim.scrub_inputs or orphaned
            )
    for e in kept:
        if e.child.index in mapping and e.parent.index in mapping:
            building.add_edge(new, mapping[e.child.index], mapping[e.parent.index], e.port, e.positions)
    return new
