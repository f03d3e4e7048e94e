"""Reading a hypothesis's graph: its edges, a claim's children and parents, finding a claim,
the model-independent structure check, treeification and the printed tree.

Plain functions of a hypothesis's state (`values.HypothesisState`); the class's methods delegate here.
"""

from __future__ import annotations

from typing import Optional

import networkx as nx

from scrub.errors import HypothesisError
from scrub.hypothesis import collapse
from scrub.hypothesis.values import Claim, Edge, HypothesisState, TreeSpec

__all__ = ["root", "edges", "children", "parents", "find", "check_structure", "collapsible", "tree", "describe"]


def root(h: HypothesisState) -> Claim:
    if h._root is None:
        raise HypothesisError(f"{h.name}: the hypothesis has no output yet; call h.output() first")
    return h._root


def edges(h: HypothesisState) -> tuple[Edge, ...]:
    """All edges, in insertion order."""
    found = [data["edge"] for _, _, data in h._graph.edges(data=True)]
    return tuple(sorted(found, key=lambda e: e.seq))


def children(h: HypothesisState, claim: Claim) -> tuple[Edge, ...]:
    """Edges into ``claim``, in the order their children were claimed."""
    found = [data["edge"] for _, _, data in h._graph.in_edges(claim, data=True)]
    return tuple(sorted(found, key=lambda e: (e.child.index, e.seq)))


def parents(h: HypothesisState, claim: Claim) -> tuple[Edge, ...]:
    """Edges out of ``claim``, in insertion order."""
    found = [data["edge"] for _, _, data in h._graph.out_edges(claim, data=True)]
    return tuple(sorted(found, key=lambda e: e.seq))


def find(h: HypothesisState, name_or_component) -> Claim:
    """The claim with this name, or the only claim of this component."""
    hits = [c for c in h._claims if c.name == name_or_component or c.component == name_or_component]
    if len(hits) != 1:
        raise HypothesisError(
            f"{h.name}: find({name_or_component!r}) matched {len(hits)} claims; "
            f"claims are {[c.name for c in h._claims]}"
        )
    return hits[0]


def check_structure(h: HypothesisState) -> None:
    """Model-independent checks: an output exists, no cycle, every claim reaches the output."""
    top = root(h)
    if not nx.is_directed_acyclic_graph(h._graph):
        cycle = nx.find_cycle(h._graph)
        raise HypothesisError(
            f"{h.name}: the claims form a cycle {[(str(a), str(b)) for a, b, *_ in cycle]}; "
            f"a hypothesis must be acyclic (remove one of these edges)"
        )
    reaching = nx.ancestors(h._graph, top)  # one search, not one per claim
    for claim in h._claims:
        if claim is top:
            continue
        if h._graph.out_degree(claim) == 0:
            raise HypothesisError(f"{h.name}: claim {claim} feeds nothing; connect it with into=... or drop it")
        if claim not in reaching:
            raise HypothesisError(f"{h.name}: claim {claim} does not reach the output")


def collapsible(h: HypothesisState) -> frozenset:
    """The claims treeification keeps as leaves: the complete claims (`scrub.hypothesis.collapse`)
    for the model shape ``h`` records, the output excepted; none without a recorded shape."""
    shape = getattr(h, "_shape", None)
    if shape is None or not collapse.ENABLED:
        return frozenset()
    return frozenset(c for c in collapse.complete_claims(h, shape) if not c.is_output)


def tree(h: HypothesisState) -> TreeSpec:
    """The treeified hypothesis: one `TreeSpec` per path from a claim to the root; a complete
    claim's copy is a leaf on its datum (`collapsible`), its subtree not expanded."""
    check_structure(h)
    top = root(h)
    return _build(h, collapsible(h), top, None, (top.name,))


def _build(h: HypothesisState, leaves: frozenset, claim: Claim, edge: Optional[Edge], path: tuple[str, ...]) -> TreeSpec:
    """The tree below ``claim`` reached along ``path`` (a plain function, not a closure: a recursive
    closure is a reference cycle that would keep ``h`` alive until the next garbage collection)."""
    if claim in leaves:
        return TreeSpec(claim=claim, edge=edge, children=(), path=path, complete=True)
    kids = tuple(
        _build(h, leaves, e.child, e, path + (f"{e.child.name}->{e.parent.name}.{e.port}",))
        for e in children(h, claim)
    )
    return TreeSpec(claim=claim, edge=edge, children=kids, path=path)


def describe(h: HypothesisState) -> str:
    """The hypothesis drawn as an indented tree, one line per treeified claim."""
    lines = [f"Hypothesis {h.name!r}"]
    if h._root is None:
        return lines[0] + " (empty)"

    def show(node: TreeSpec, indent: str) -> None:
        for child in node.children:
            e = child.edge
            where = "" if e.positions is None else f" @pos{list(e.positions)}"
            kind = "leaf" if child.is_leaf else f"{len(child.children)} children"
            kind = "complete: leaf" if child.complete else kind
            kind = "inputs resampled" if child.claim.scrub_inputs and not child.children else kind
            lines.append(f"{indent}<-{e.port}{where}- {child.claim.name} [{child.claim.feature}] ({kind})")
            show(child, indent + "    ")

    lines.append("output")
    try:
        unrolled = tree(h)
    except HypothesisError as exc:
        return "\n".join(lines + [f"  (cannot draw the tree: {exc})"])
    show(unrolled, "  ")
    return "\n".join(lines)
