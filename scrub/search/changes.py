"""The changes a search tries on a hypothesis, and applying them (the original is never changed).

A change is a frozen value naming claims by name (names are unique within a hypothesis, and a
variant keeps them), so a change found on one hypothesis applies to its variants:

* `RemoveEdge`: drop the edge ``child -> parent.port``; the parent's port then reads the child's
  output from the parent's "other" datum (resampled). A claim left without parents is dropped
  with everything that only fed it; a claim left without children keeps its meaning: its inputs
  are resampled (``scrub_inputs``), it does not become a leaf (`variants.copy_keeping`).
* `Coarsen`: replace a claim's feature (`EXACT`) by a coarser one, so its datum is drawn from the
  rows that agree with its parent's datum on that feature only.
"""

from __future__ import annotations

from typing import Iterable, Optional, Union

import attrs

from scrub.data import Feature
from scrub.errors import HypothesisError
from scrub.hypothesis import Edge, Hypothesis
from scrub.hypothesis import variants

__all__ = ["RemoveEdge", "Coarsen", "Change", "apply", "edge_key", "size"]


@attrs.frozen
class RemoveEdge:
    """Remove the edge ``child -> parent.port`` (at ``positions``; None: every position)."""

    child: str
    parent: str
    port: str
    positions: Optional[tuple[int, ...]] = None

    @classmethod
    def of(cls, edge: Edge) -> "RemoveEdge":
        return cls(edge.child.name, edge.parent.name, edge.port, edge.positions)

    @property
    def claim(self) -> str:
        """The claim whose step tries this change (the edge's parent)."""
        return self.parent

    def __str__(self) -> str:
        where = "" if self.positions is None else f" @pos{list(self.positions)}"
        return f"remove {self.child} -> {self.parent}.{self.port}{where}"


@attrs.frozen
class Coarsen:
    """Replace the feature of claim ``target`` by ``feature``."""

    target: str
    feature: Feature = attrs.field(eq=False)
    feature_name: str = attrs.field(default="")

    def __attrs_post_init__(self) -> None:
        if not self.feature_name:
            object.__setattr__(self, "feature_name", self.feature.name)

    @property
    def claim(self) -> str:
        return self.target

    def __str__(self) -> str:
        return f"coarsen {self.target}: EXACT -> {self.feature_name}"


Change = Union[RemoveEdge, Coarsen]


def edge_key(edge: Edge) -> tuple:
    """An edge by names: ``(child, parent, port, positions)``."""
    return (edge.child.name, edge.parent.name, edge.port, edge.positions)


def size(h: Hypothesis) -> int:
    """The size a search minimises: the number of edges."""
    return len(h.edges)


def apply(h: Hypothesis, changes: Iterable[Change], name: Optional[str] = None) -> Hypothesis:
    """A copy of ``h`` with ``changes`` made (in any order: removals and coarsenings commute).

    Raises:
        HypothesisError: a change names a claim or edge ``h`` does not have.
    """
    changes = list(changes)
    names = {c.name for c in h.claims}
    drop = set()
    features: dict[str, Feature] = {}
    keys = {edge_key(e) for e in h.edges}
    for change in changes:
        if isinstance(change, RemoveEdge):
            key = (change.child, change.parent, change.port, change.positions)
            if key not in keys:
                raise HypothesisError(f"{h.name}: cannot {change}: no such edge; its edges are {[str(e) for e in h.edges]}")
            drop.add(key)
        elif isinstance(change, Coarsen):
            if change.target not in names:
                raise HypothesisError(f"{h.name}: cannot {change}: no claim named {change.target!r}")
            features[change.target] = change.feature
        else:
            raise HypothesisError(f"{h.name}: {change!r} is not a search change (RemoveEdge or Coarsen)")
    return variants.copy_keeping(h, lambda e: edge_key(e) not in drop, name or h.name, features)

