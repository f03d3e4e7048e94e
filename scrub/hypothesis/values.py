"""The values a hypothesis is made of: claims, edges and the nodes of its treeified form (all
frozen; a `Hypothesis` creates them), and `HypothesisState`, the state the package's functions
read and change (a `Hypothesis` is one).
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Protocol, Sequence, Union

import attrs
import networkx as nx

from scrub.components import Component, Output
from scrub.data import Feature

__all__ = ["Claim", "Edge", "TreeSpec", "Into", "HypothesisState"]


@attrs.frozen(cache_hash=True)  # a graph node: hashed on every graph operation
class Claim:
    """One node of a hypothesis: ``component`` carries only ``feature`` on the paths it feeds.

    Claims are created by `Hypothesis.output` and `Hypothesis.claim`; ``index`` is the order of
    creation (the order children are sampled in), ``name`` a label for reports. A claim without
    children is a leaf (its whole upstream runs on its datum) unless ``scrub_inputs`` is set:
    then every input of the component comes from its node's "other" datum.
    """

    index: int
    component: Component
    feature: Optional[Feature] = attrs.field(eq=False)
    name: str
    hypothesis: str = attrs.field(repr=False)
    scrub_inputs: bool = attrs.field(default=False, repr=False)

    def __str__(self) -> str:
        return self.name

    @property
    def is_output(self) -> bool:
        return isinstance(self.component, Output)


@attrs.frozen
class Edge:
    """``child`` feeds ``port`` of ``parent``, at ``positions`` (``None``: every position)."""

    child: Claim
    parent: Claim
    port: str
    positions: Optional[tuple[int, ...]] = None
    seq: int = attrs.field(default=0, eq=False, repr=False)  # insertion order, for sampling order

    def __str__(self) -> str:
        where = "" if self.positions is None else f" @pos{list(self.positions)}"
        return f"{self.child} -> {self.parent}.{self.port}{where}"


@attrs.frozen(eq=False)
class TreeSpec:
    """One node of the treeified hypothesis: a claim reached along one particular path.

    ``path`` is the chain of ``(claim name, port)`` from the root down to this node, which makes
    each copy of a claim reached by two paths distinct. ``complete``: the claim is complete for
    the hypothesis's model shape (`scrub.hypothesis.collapse`), so this copy is a leaf on its
    datum and its claimed subtree is not expanded (``children`` is empty).
    """

    claim: Claim
    edge: Optional[Edge]
    children: tuple["TreeSpec", ...]
    path: tuple[str, ...]
    complete: bool = False

    @property
    def is_leaf(self) -> bool:
        return not self.children and not self.claim.is_output and not self.claim.scrub_inputs

    def walk(self) -> Iterator["TreeSpec"]:
        """This node and every node below it, depth first, children in claim order."""
        yield self
        for child in self.children:
            yield from child.walk()


Into = Union[Claim, tuple[Claim, str], Sequence[Union[Claim, tuple[Claim, str]]]]
"""Where a claim feeds: a parent claim, a ``(parent, port)`` pair, or a list of them."""


class HypothesisState(Protocol):
    """What the functions of `building`, `graph`, `checking` and `variants` read and change.

    ``_graph`` holds the claims as nodes and each `Edge` under the ``edge`` key (child -> parent,
    keyed by port); ``_claims`` is in creation order (the root first); ``_next_edge`` numbers
    edges in insertion order; ``_shape`` is the `ModelShape` the hypothesis is recorded for (or
    None). Calling the type with a name gives an empty hypothesis.
    """

    name: str
    _shape: Optional[Any]
    _graph: nx.MultiDiGraph
    _claims: list[Claim]
    _root: Optional[Claim]
    _next_edge: int

    def __init__(self, name: str) -> None: ...
