"""Building a hypothesis: adding claims and edges, resolving names, ports and positions.

Plain functions of a `Hypothesis`; each either completes or leaves the hypothesis as it was
(a claim whose edges fail is taken out again). Checks that need a model live in `checking`.
"""

from __future__ import annotations

from typing import Iterable, Optional

from scrub.components import WRITERS, Component, ports_of
from scrub.data import Feature
from scrub.errors import ComponentError, HypothesisError
from scrub.hypothesis.values import Claim, Edge, HypothesisState, Into

__all__ = ["claim", "connect", "add_claim", "add_edge", "check_member"]


def claim(
    h: HypothesisState,
    component: Component,
    feature: Feature,
    into: Into,
    positions: Optional[Iterable[int]],
    name: Optional[str],
    scrub_inputs: bool,
) -> Claim:
    """Add a claim and its edges into ``into`` (see `Hypothesis.claim`); all or nothing."""
    if not isinstance(component, WRITERS):
        raise HypothesisError(
            f"{h.name}: claim({component!r}, ...): only Head, MLP, Embed and PosEmbed write into "
            f"the residual stream and can be claimed; use h.output() for the root"
        )
    if not isinstance(feature, Feature):
        raise HypothesisError(
            f"{h.name}: claim({component}, {feature!r}): the feature must be a scrub.Feature "
            f"(e.g. Feature.token(), EXACT, or Feature('name', fn))"
        )
    targets = _resolve_into(h, component, into)
    pos = _resolve_positions(h, component, positions)
    new = add_claim(h, component, feature, name or _unique_name(h, str(component)), bool(scrub_inputs))
    try:
        for parent, port in targets:
            add_edge(h, new, parent, port, pos)
    except HypothesisError:
        h._graph.remove_node(new)
        h._claims.pop()
        raise
    return new


def connect(h: HypothesisState, child: Claim, into: Into, positions: Optional[Iterable[int]]) -> None:
    """Make an existing claim feed further ports or parents; all or nothing."""
    check_member(h, child, "connect")
    targets = _resolve_into(h, child.component, into)
    pos = _resolve_positions(h, child.component, positions)
    added = []
    try:
        for parent, port in targets:
            added.append(add_edge(h, child, parent, port, pos))
    except HypothesisError:
        for edge in added:
            h._graph.remove_edge(edge.child, edge.parent, key=edge.port)
        raise


def add_claim(
    h: HypothesisState, component: Component, feature: Optional[Feature], name: str, scrub_inputs: bool = False
) -> Claim:
    """Append a claim (no edges yet); its index is its order of creation."""
    if any(c.name == name for c in h._claims):
        raise HypothesisError(f"{h.name}: a claim named {name!r} already exists; pick another name")
    new = Claim(
        index=len(h._claims), component=component, feature=feature, name=name,
        hypothesis=h.name, scrub_inputs=scrub_inputs,
    )
    h._claims.append(new)
    h._graph.add_node(new)
    return new


def add_edge(h: HypothesisState, child: Claim, parent: Claim, port: str, positions, check: bool = True) -> Edge:
    """Add the edge ``child -> parent.port``, refusing a second claim of one component into one port.

    ``check=False`` skips that check (an O(children) scan of the parent): for edges copied from a
    hypothesis that already passed it (variants) or made distinct by construction (`full`)."""
    if check:
        for _, _, data in h._graph.in_edges(parent, data=True):
            edge = data["edge"]
            if edge.port == port and edge.child.component == child.component:
                raise HypothesisError(
                    f"{h.name}: {child.component} is already claimed into {parent}.{port} (as "
                    f"{edge.child}); a component can be claimed only once into one port of one parent: "
                    f"merge the two claims into one with a combined feature"
                )
    if child is parent:
        raise HypothesisError(f"{h.name}: claim {child} cannot feed itself")
    edge = Edge(child=child, parent=parent, port=port, positions=positions, seq=h._next_edge)
    h._next_edge += 1
    h._graph.add_edge(child, parent, key=port, edge=edge)
    return edge


def check_member(h: HypothesisState, item: Claim, where: str) -> None:
    """Refuse anything that is not a claim of ``h`` (a claim of another hypothesis included)."""
    if not isinstance(item, Claim) or item.index >= len(h._claims) or h._claims[item.index] is not item:
        raise HypothesisError(
            f"{h.name}: {where}({item!r}): not a claim of this hypothesis; use the Claim "
            f"returned by h.output() or h.claim(...) on this hypothesis"
        )


def _unique_name(h: HypothesisState, base: str) -> str:
    names = {c.name for c in h._claims}
    if base not in names:
        return base
    i = 2
    while f"{base}#{i}" in names:
        i += 1
    return f"{base}#{i}"


def _resolve_into(h: HypothesisState, component: Component, into: Into) -> list[tuple[Claim, str]]:
    is_pair = isinstance(into, tuple) and len(into) == 2 and isinstance(into[1], str)
    if isinstance(into, Claim) or is_pair:
        items = [into]
    elif isinstance(into, (list, tuple)):
        items = list(into)
    else:
        raise HypothesisError(
            f"{h.name}: claim({component}, into={into!r}): into must be a claim, a (claim, port) "
            f"pair or a list of them"
        )
    if not items:
        raise HypothesisError(f"{h.name}: claim({component}, into=[]): a claim must feed something")
    resolved = []
    for item in items:
        parent, port = (item, None) if isinstance(item, Claim) else (tuple(item) + (None,))[:2]
        check_member(h, parent, f"claim({component}, into=...)")
        ports = ports_of(parent.component)
        if not ports:
            raise HypothesisError(f"{h.name}: {parent} ({parent.component}) has no ports; nothing can feed it")
        if port is None:
            if len(ports) != 1:
                raise HypothesisError(
                    f"{h.name}: claim({component}, into={parent}): {parent.component} reads through "
                    f"ports {list(ports)}; say which, e.g. into=({parent.name!r} claim, 'q')"
                )
            port = ports[0]
        if port not in ports:
            raise ComponentError(f"{h.name}: {parent.component} has no port {port!r}; its ports are {list(ports)}")
        resolved.append((parent, port))
    return resolved


def _resolve_positions(h: HypothesisState, component: Component, positions) -> Optional[tuple[int, ...]]:
    if positions is None:
        return None
    if isinstance(positions, int):
        positions = [positions]
    pos = tuple(sorted(set(int(p) for p in positions)))
    if not pos or pos[0] < 0:
        raise HypothesisError(
            f"{h.name}: claim({component}, positions={positions!r}): positions must be a "
            f"non-empty set of non-negative ints (or None for all positions)"
        )
    return pos
