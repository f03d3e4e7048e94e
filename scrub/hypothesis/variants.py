"""Deriving variants of a hypothesis: without some claims, or with only some edges.

A variant is a new hypothesis of the same class; the original is never changed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable, Mapping, Optional

from scrub.data import Feature
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


def copy_keeping(
    h: HypothesisState,
    keep_edge: Callable[[Edge], bool],
    name: str,
    features: Optional[Mapping[str, Feature]] = None,
) -> HypothesisState:
    """A new hypothesis named ``name`` with the edges ``keep_edge`` accepts and the claims that
    still reach the output through them (same names, features and order; ``features`` replaces
    the features of the claims it names). The copy keeps ``h``'s recorded model shape.

    A claim that loses all its children keeps its meaning: its inputs are resampled
    (``scrub_inputs``), it does not turn into a leaf (which would claim everything upstream)."""
    features = features or {}
    top = graph.root(h)
    new = type(h)(name)
    new._shape = getattr(h, "_shape", None)  # a variant is for the same model
    mapping = {top.index: new.output()}
    kept = [e for e in graph.edges(h) if keep_edge(e)]
    feeders: dict[int, list[int]] = defaultdict(list)  # parent index -> child indices, kept edges
    for e in kept:
        feeders[e.parent.index].append(e.child.index)
    reaching, todo = set(), [top.index]  # claims with a kept path to the output
    while todo:
        for child in feeders[todo.pop()]:
            if child not in reaching:
                reaching.add(child)
                todo.append(child)
    for claim in h._claims[1:]:
        if claim.index in reaching:
            orphaned = h._graph.in_degree(claim) > 0 and not feeders[claim.index]
            mapping[claim.index] = building.add_claim(
                new, claim.component, features.get(claim.name, claim.feature), claim.name,
                claim.scrub_inputs or orphaned,
            )
    for e in kept:  # edges of a valid hypothesis: no duplicate check needed
        if e.child.index in mapping and e.parent.index in mapping:
            building.add_edge(new, mapping[e.child.index], mapping[e.parent.index], e.port, e.positions, check=False)
    return new
