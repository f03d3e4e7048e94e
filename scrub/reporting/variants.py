"""Subgraph variants of a hypothesis: leave-one-out, each claim alone, each path, named subsets.

All functions are pure: they read a `Hypothesis` and return new ones, each wrapped in a
`Variant` that says how it was made.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence, Union

import attrs
import networkx as nx

from scrub.components import stage
from scrub.errors import ReportError
from scrub.hypothesis import Claim, Edge, Hypothesis

__all__ = ["Variant", "leave_one_out", "alone", "paths", "named", "without_pair", "default_pairs"]


@attrs.frozen(eq=False)
class Variant:
    """A subgraph of a hypothesis.

    ``kind`` is ``"leave-one-out"``, ``"alone"``, ``"path"`` or ``"named"``; ``claims`` names the
    claims it is about (the removed claim for leave-one-out, the kept ones otherwise).
    """

    kind: str
    name: str
    claims: tuple[str, ...]
    hypothesis: Hypothesis


def _non_root(h: Hypothesis) -> list[Claim]:
    return [c for c in h.claims if not c.is_output]


def leave_one_out(h: Hypothesis) -> list[Variant]:
    """One variant per claim: the hypothesis without it (and what then no longer reaches the output)."""
    return [
        Variant("leave-one-out", f"without {c.name}", (c.name,), h.without(c, name=f"{h.name} without {c.name}"))
        for c in _non_root(h)
    ]


def _closure(h: Hypothesis, claims: Iterable[Claim]) -> set[Claim]:
    """The claims, their subtrees (what feeds them) and the chains that connect them to the output."""
    graph = h.graph
    keep: set[Claim] = {h.root}
    for c in claims:
        keep |= {c} | nx.ancestors(graph, c) | nx.descendants(graph, c)
    return keep


def _restricted(h: Hypothesis, keep: set[Claim], name: str) -> Hypothesis:
    return h.only_edges([e for e in h.edges if e.child in keep and e.parent in keep], name=name)


def alone(h: Hypothesis) -> list[Variant]:
    """One variant per claim: the claim with its subtree and the chain linking it to the output."""
    out = []
    for c in _non_root(h):
        out.append(Variant("alone", f"{c.name} alone", (c.name,), _restricted(h, _closure(h, [c]), f"{h.name}: {c.name} alone")))
    return out


def paths(h: Hypothesis, limit: int = 64) -> list[Variant]:
    """One variant per root-to-leaf path of the treeified hypothesis (at most ``limit``)."""
    found: list[tuple[Edge, ...]] = []

    def walk(node, chain: tuple[Edge, ...]) -> None:
        if not node.children and node.edge is not None:
            found.append(chain)
        for child in node.children:
            walk(child, chain + (child.edge,))

    walk(h.tree(), ())
    if len(found) > limit:
        raise ReportError(
            f"{h.name}: the treeified hypothesis has {len(found)} root-to-leaf paths, more than "
            f"limit={limit}; raise the limit (paths_limit=...) or turn path variants off (paths=False)"
        )
    variants = []
    for chain in found:
        label = " <- ".join(["output"] + [f"{e.port}:{e.child.name}" for e in chain])
        variants.append(Variant("path", label, tuple(e.child.name for e in chain), h.only_edges(chain, name=label)))
    return variants


def named(h: Hypothesis, subgraphs: Mapping[str, Union[Sequence[str], Hypothesis]]) -> list[Variant]:
    """User-named subgraphs: a list of claim names (kept with their subtrees and links to the
    output) or a ready-made Hypothesis."""
    variants = []
    for label, spec in subgraphs.items():
        if isinstance(spec, Hypothesis):
            variants.append(Variant("named", label, tuple(c.name for c in _non_root(spec)), spec))
            continue
        if isinstance(spec, str) or not spec:
            raise ReportError(
                f"subgraph {label!r}: give a non-empty list of claim names of {h.name!r} (or a Hypothesis), got {spec!r}"
            )
        claims = [_find(h, name) for name in spec]
        variants.append(Variant("named", label, tuple(spec), _restricted(h, _closure(h, claims), label)))
    return variants


def _find(h: Hypothesis, name: str) -> Claim:
    for c in h.claims:
        if c.name == name:
            return c
    raise ReportError(f"{h.name}: no claim named {name!r}; claims are {[c.name for c in _non_root(h)]}")


def without_pair(h: Hypothesis, a: str, b: str) -> Hypothesis:
    """The hypothesis without claims ``a`` and ``b``."""
    return h.without(_find(h, a), _find(h, b), name=f"{h.name} without {a} and {b}")


def default_pairs(h: Hypothesis, n_layers: int, limit: int) -> tuple[list[tuple[str, str]], int]:
    """Candidate backup pairs ``(a, b)``: claims that feed a common parent, with ``b`` downstream
    of ``a`` in the model (a later stage) and neither feeding the other in the hypothesis (the
    IOI pattern: name movers in layer 9, backup name movers in layer 10, both into the logits).
    Returns at most ``limit`` pairs (in claim order) and the number found."""
    graph = h.graph
    claims = _non_root(h)
    parents = {c: {e.parent for e in h.parents(c)} for c in claims}
    pairs = []
    for a in claims:
        for b in claims:
            if a is b or a.component == b.component or not (parents[a] & parents[b]):
                continue
            if stage(a.component, n_layers) >= stage(b.component, n_layers):
                continue
            if a in nx.ancestors(graph, b) or b in nx.ancestors(graph, a):
                continue
            pairs.append((a.name, b.name))
    return pairs[:limit], len(pairs)


def pair_names(pairs: Iterable[Sequence[str]], h: Hypothesis) -> list[tuple[str, str]]:
    """Check user-named pairs against the hypothesis."""
    graph = h.graph
    out = []
    for pair in pairs:
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ReportError(f"redundancy pair {pair!r}: give two different claim names")
        a, b = _find(h, pair[0]), _find(h, pair[1])
        if a in nx.ancestors(graph, b) or b in nx.ancestors(graph, a):
            raise ReportError(
                f"redundancy pair ({a.name!r}, {b.name!r}): one feeds the other in the hypothesis, so "
                f"removing the downstream claim removes both and joint removal says nothing; pick two "
                f"claims on different paths"
            )
        out.append((a.name, b.name))
    return out
