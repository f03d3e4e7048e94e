"""Hypotheses: graphs of claims about which components carry which features into which ports.

A `Hypothesis` is a DAG of `Claim`s rooted at the model output. Each edge ``child -> parent``
names the port of the parent that the child feeds (``q``, ``k``, ``v`` of a head; ``in`` of an
MLP or of the output) and, optionally, the positions at which the claim holds. The graph is a
networkx ``MultiDiGraph`` (a child may feed several ports of one parent).

Building a hypothesis is pure: nothing touches a model until `Hypothesis.validate` (called by
`scrub.evaluate` and `scrub.plan`) checks it against one. `Hypothesis.tree` unrolls the DAG into
its treeified form: every path from a claim to the root becomes its own `TreeSpec` node, so a
claim reached by two paths is sampled independently for each.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Sequence, Union

import attrs
import networkx as nx

from scrub.components import (
    Component,
    Embed,
    Head,
    MLP,
    Output,
    PosEmbed,
    WRITERS,
    ports_of,
    stage,
)
from scrub.data import Feature
from scrub.errors import ComponentError, HypothesisError

__all__ = ["Claim", "Edge", "Hypothesis", "TreeSpec", "ModelShape"]


@attrs.frozen
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


@attrs.frozen
class ModelShape:
    """What validation needs to know about a model (read from a HookedTransformer or ModelView)."""

    n_layers: int
    n_heads: int
    n_ctx: int
    attn_only: bool
    shortformer: bool = False

    @classmethod
    def of(cls, model) -> "ModelShape":
        if isinstance(model, ModelShape):
            return model
        cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
        if cfg is None:
            raise HypothesisError(
                f"cannot read the shape of {type(model).__name__}; pass a TransformerLens "
                f"HookedTransformer, a scrub ModelView or a ModelShape"
            )
        positional = getattr(cfg, "positional_embedding_type", getattr(cfg, "positional", "standard"))
        return cls(
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            n_ctx=cfg.n_ctx,
            attn_only=bool(cfg.attn_only),
            shortformer=positional == "shortformer",
        )


@attrs.frozen(eq=False)
class TreeSpec:
    """One node of the treeified hypothesis: a claim reached along one particular path.

    ``path`` is the chain of ``(claim name, port)`` from the root down to this node, which makes
    each copy of a claim reached by two paths distinct.
    """

    claim: Claim
    edge: Optional[Edge]
    children: tuple["TreeSpec", ...]
    path: tuple[str, ...]

    @property
    def is_leaf(self) -> bool:
        return not self.children and not self.claim.is_output and not self.claim.scrub_inputs

    def walk(self) -> Iterator["TreeSpec"]:
        """This node and every node below it, depth first, children in claim order."""
        yield self
        for child in self.children:
            yield from child.walk()


Into = Union[Claim, tuple[Claim, str], Sequence[Union[Claim, tuple[Claim, str]]]]


class Hypothesis:
    """A causal-scrubbing hypothesis: a DAG of claims rooted at the model output.

    Example:
        >>> from scrub import Hypothesis, Head, Embed, Feature, EXACT
        >>> h = Hypothesis("induction")
        >>> out = h.output()
        >>> ind = h.claim(Head(1, 2), EXACT, into=out)
        >>> q = h.claim(Embed(), Feature.token(), into=(ind, "q"))
        >>> len(h.claims)
        3

    Claims are immutable; building adds claims and edges. `without` and `only` return new
    hypotheses (the subgraph variants reports use). The graph is available, frozen, as `graph`.
    """

    def __init__(self, name: str = "hypothesis") -> None:
        if not isinstance(name, str) or not name:
            raise HypothesisError(f"a hypothesis needs a non-empty name string, got {name!r}")
        self.name = name
        self._graph = nx.MultiDiGraph()
        self._claims: list[Claim] = []
        self._root: Optional[Claim] = None
        self._next_edge = 0

    # ---- building -----------------------------------------------------------------------------

    def output(self) -> Claim:
        """The root claim: the model output (logits). Calling it again returns the same claim."""
        if self._root is None:
            self._root = self._add_claim(Output(), None, "output")
        return self._root

    def claim(
        self,
        component: Component,
        feature: Feature,
        into: Into,
        positions: Optional[Iterable[int]] = None,
        name: Optional[str] = None,
        scrub_inputs: bool = False,
    ) -> Claim:
        """Claim that ``component`` carries only ``feature`` into ``into``.

        Args:
            component: a `Head`, `MLP`, `Embed` or `PosEmbed`.
            feature: what the component's output carries on these paths (`EXACT` for all of it).
            into: the parent claim (for parents with a single port, e.g. the output or an MLP), a
                ``(parent, port)`` pair, or a list of them (the claim then feeds several ports or
                parents and is sampled independently for each: treeification).
            positions: restrict the edges to these positions of the parent's input; elsewhere
                the parent's "other" datum stands.
            name: a label (default: the component, made unique).
            scrub_inputs: for a claim that gets no children: instead of a leaf (everything
                upstream on its datum), every input of the component comes from the "other"
                datum: "this component matters on this path, none of its inputs do". Reports set
                it on a claim whose last child they remove.

        Raises:
            HypothesisError: bad component, feature, parent, port or positions (see message).
        """
        if not isinstance(component, WRITERS):
            raise HypothesisError(
                f"{self.name}: claim({component!r}, ...): only Head, MLP, Embed and PosEmbed write into "
                f"the residual stream and can be claimed; use h.output() for the root"
            )
        if not isinstance(feature, Feature):
            raise HypothesisError(
                f"{self.name}: claim({component}, {feature!r}): the feature must be a scrub.Feature "
                f"(e.g. Feature.token(), EXACT, or Feature('name', fn))"
            )
        targets = self._resolve_into(component, into)
        pos = self._resolve_positions(component, positions)
        claim = self._add_claim(component, feature, name or self._unique_name(str(component)), bool(scrub_inputs))
        try:
            for parent, port in targets:
                self._add_edge(claim, parent, port, pos)
        except HypothesisError:
            self._graph.remove_node(claim)
            self._claims.pop()
            raise
        return claim

    def connect(self, child: Claim, into: Into, positions: Optional[Iterable[int]] = None) -> None:
        """Make an existing claim feed further ports or parents (it is treeified per path)."""
        self._check_member(child, "connect")
        targets = self._resolve_into(child.component, into)
        pos = self._resolve_positions(child.component, positions)
        added = []
        try:
            for parent, port in targets:
                added.append(self._add_edge(child, parent, port, pos))
        except HypothesisError:  # all or nothing
            for edge in added:
                self._graph.remove_edge(edge.child, edge.parent, key=edge.port)
            raise

    # ---- reading ------------------------------------------------------------------------------

    @property
    def root(self) -> Claim:
        if self._root is None:
            raise HypothesisError(f"{self.name}: the hypothesis has no output yet; call h.output() first")
        return self._root

    @property
    def claims(self) -> tuple[Claim, ...]:
        """All claims in creation order (the root first)."""
        return tuple(self._claims)

    @property
    def edges(self) -> tuple[Edge, ...]:
        """All edges, ordered by the child's creation, then insertion."""
        edges = [data["edge"] for _, _, data in self._graph.edges(data=True)]
        return tuple(sorted(edges, key=lambda e: e.seq))

    @property
    def graph(self) -> nx.MultiDiGraph:
        """A frozen copy of the graph: nodes are claims, edges child -> parent with key = port."""
        return nx.freeze(self._graph.copy())

    def children(self, claim: Claim) -> tuple[Edge, ...]:
        """Edges into ``claim``, in the order their children were claimed."""
        edges = [data["edge"] for _, _, data in self._graph.in_edges(claim, data=True)]
        return tuple(sorted(edges, key=lambda e: (e.child.index, e.seq)))

    def parents(self, claim: Claim) -> tuple[Edge, ...]:
        edges = [data["edge"] for _, _, data in self._graph.out_edges(claim, data=True)]
        return tuple(sorted(edges, key=lambda e: e.seq))

    def find(self, name_or_component) -> Claim:
        """The claim with this name, or the only claim of this component."""
        hits = [c for c in self._claims if c.name == name_or_component or c.component == name_or_component]
        if len(hits) != 1:
            raise HypothesisError(
                f"{self.name}: find({name_or_component!r}) matched {len(hits)} claims; "
                f"claims are {[c.name for c in self._claims]}"
            )
        return hits[0]

    # ---- checking -----------------------------------------------------------------------------

    def validate(self, model, n_pos: Optional[int] = None) -> None:
        """Check the hypothesis against a model (and a dataset's sequence length) before running.

        Raises:
            HypothesisError / ComponentError: a cycle, a claim that feeds nothing, a component or
                port the model lacks, a child that is not upstream of its parent, positions out
                of range.
        """
        shape = ModelShape.of(model)
        self.validate_structure()
        for claim in self._claims[1:]:
            self._check_component(claim.component, shape)
        limit = shape.n_ctx if n_pos is None else min(n_pos, shape.n_ctx)
        for edge in self.edges:
            s_child, s_parent = stage(edge.child.component, shape.n_layers), stage(edge.parent.component, shape.n_layers)
            if s_child >= s_parent:
                raise HypothesisError(
                    f"{self.name}: {edge}: {edge.child.component} is not upstream of "
                    f"{edge.parent.component}; a component can only feed components of later layers "
                    f"(a head feeds heads of later layers, MLPs of its layer or later, and the output)"
                )
            if edge.positions is not None and max(edge.positions) >= limit:
                raise HypothesisError(
                    f"{self.name}: {edge}: position {max(edge.positions)} is out of range; "
                    f"sequences have {limit} positions (0..{limit - 1})"
                )

    def validate_structure(self) -> None:
        """Model-independent checks: an output exists, no cycle, every claim reaches the output."""
        root = self.root
        if not nx.is_directed_acyclic_graph(self._graph):
            cycle = nx.find_cycle(self._graph)
            raise HypothesisError(
                f"{self.name}: the claims form a cycle {[(str(a), str(b)) for a, b, *_ in cycle]}; "
                f"a hypothesis must be acyclic (remove one of these edges)"
            )
        for claim in self._claims:
            if claim is root:
                continue
            if self._graph.out_degree(claim) == 0:
                raise HypothesisError(
                    f"{self.name}: claim {claim} feeds nothing; connect it with into=... or drop it"
                )
            if not nx.has_path(self._graph, claim, root):
                raise HypothesisError(f"{self.name}: claim {claim} does not reach the output")

    @staticmethod
    def _check_component(component: Component, shape: ModelShape) -> None:
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
        elif isinstance(component, PosEmbed) and shape.shortformer:
            raise ComponentError(
                "PosEmbed: this model uses shortformer positions, which are added inside each "
                "attention layer, not to the residual stream; they are the same for every input, "
                "so there is nothing to claim (drop the PosEmbed claim)"
            )

    # ---- treeification and variants -----------------------------------------------------------

    def tree(self) -> TreeSpec:
        """The treeified hypothesis: one `TreeSpec` per path from a claim to the root.

        Raises:
            HypothesisError: the graph has a cycle (see `validate_structure`).
        """
        self.validate_structure()

        def build(claim: Claim, edge: Optional[Edge], path: tuple[str, ...]) -> TreeSpec:
            kids = tuple(
                build(e.child, e, path + (f"{e.child.name}->{e.parent.name}.{e.port}",))
                for e in self.children(claim)
            )
            return TreeSpec(claim=claim, edge=edge, children=kids, path=path)

        return build(self.root, None, (self.root.name,))

    def without(self, *claims: Claim, name: Optional[str] = None) -> "Hypothesis":
        """A copy with ``claims`` removed, and every claim that then no longer reaches the output."""
        for c in claims:
            self._check_member(c, "without")
            if c.is_output:
                raise HypothesisError(f"{self.name}: the output claim cannot be removed")
        drop = {c.index for c in claims}
        label = name or f"{self.name} - " + ", ".join(c.name for c in claims)
        return self._copy(lambda e: e.child.index not in drop and e.parent.index not in drop, label)

    def only_edges(self, keep: Iterable[Edge], name: str) -> "Hypothesis":
        """A copy keeping just the given edges (and the claims that still reach the output)."""
        keep_set = set(keep)
        return self._copy(lambda e: e in keep_set, name)

    def _copy(self, keep_edge, name: str) -> "Hypothesis":
        new = Hypothesis(name)
        root = new.output()
        mapping = {self.root.index: root}
        kept = [e for e in self.edges if keep_edge(e)]
        graph = nx.MultiDiGraph()
        graph.add_nodes_from(e.child.index for e in kept)
        graph.add_node(self.root.index)
        for e in kept:
            graph.add_edge(e.child.index, e.parent.index)
        reaching = nx.ancestors(graph, self.root.index)
        for claim in self._claims[1:]:
            if claim.index in reaching:
                # a claim that loses all its children keeps its meaning: its inputs are resampled,
                # it does not turn into a leaf (which would claim everything upstream of it)
                orphaned = bool(self.children(claim)) and graph.in_degree(claim.index) == 0
                new_claim = new._add_claim(claim.component, claim.feature, claim.name, claim.scrub_inputs or orphaned)
                mapping[claim.index] = new_claim
        for e in kept:
            if e.child.index in mapping and e.parent.index in mapping:
                new._add_edge(mapping[e.child.index], mapping[e.parent.index], e.port, e.positions)
        return new

    # ---- printing -----------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Hypothesis({self.name!r}, claims={len(self._claims)}, edges={self._graph.number_of_edges()})"

    def __str__(self) -> str:
        lines = [f"Hypothesis {self.name!r}"]
        if self._root is None:
            return lines[0] + " (empty)"

        def show(node: TreeSpec, indent: str) -> None:
            for child in node.children:
                e = child.edge
                where = "" if e.positions is None else f" @pos{list(e.positions)}"
                kind = "leaf" if child.is_leaf else f"{len(child.children)} children"
                kind = "inputs resampled" if child.claim.scrub_inputs and not child.children else kind
                lines.append(f"{indent}<-{e.port}{where}- {child.claim.name} [{child.claim.feature}] ({kind})")
                show(child, indent + "    ")

        lines.append("output")
        try:
            tree = self.tree()
        except HypothesisError as exc:
            return "\n".join(lines + [f"  (cannot draw the tree: {exc})"])
        show(tree, "  ")
        return "\n".join(lines)

    # ---- internals ----------------------------------------------------------------------------

    def _add_claim(self, component: Component, feature: Optional[Feature], name: str, scrub_inputs: bool = False) -> Claim:
        if any(c.name == name for c in self._claims):
            raise HypothesisError(f"{self.name}: a claim named {name!r} already exists; pick another name")
        claim = Claim(
            index=len(self._claims), component=component, feature=feature, name=name,
            hypothesis=self.name, scrub_inputs=scrub_inputs,
        )
        self._claims.append(claim)
        self._graph.add_node(claim)
        return claim

    def _unique_name(self, base: str) -> str:
        names = {c.name for c in self._claims}
        if base not in names:
            return base
        i = 2
        while f"{base}#{i}" in names:
            i += 1
        return f"{base}#{i}"

    def _check_member(self, claim: Claim, where: str) -> None:
        if not isinstance(claim, Claim) or claim.index >= len(self._claims) or self._claims[claim.index] is not claim:
            raise HypothesisError(
                f"{self.name}: {where}({claim!r}): not a claim of this hypothesis; use the Claim "
                f"returned by h.output() or h.claim(...) on this hypothesis"
            )

    def _resolve_into(self, component: Component, into: Into) -> list[tuple[Claim, str]]:
        is_pair = isinstance(into, tuple) and len(into) == 2 and isinstance(into[1], str)
        if isinstance(into, Claim) or is_pair:
            items = [into]
        elif isinstance(into, (list, tuple)):
            items = list(into)
        else:
            raise HypothesisError(
                f"{self.name}: claim({component}, into={into!r}): into must be a claim, a (claim, port) "
                f"pair or a list of them"
            )
        if not items:
            raise HypothesisError(f"{self.name}: claim({component}, into=[]): a claim must feed something")
        resolved = []
        for item in items:
            parent, port = (item, None) if isinstance(item, Claim) else (tuple(item) + (None,))[:2]
            self._check_member(parent, f"claim({component}, into=...)")
            ports = ports_of(parent.component)
            if not ports:
                raise HypothesisError(f"{self.name}: {parent} ({parent.component}) has no ports; nothing can feed it")
            if port is None:
                if len(ports) != 1:
                    raise HypothesisError(
                        f"{self.name}: claim({component}, into={parent}): {parent.component} reads through "
                        f"ports {list(ports)}; say which, e.g. into=({parent.name!r} claim, 'q')"
                    )
                port = ports[0]
            if port not in ports:
                raise ComponentError(
                    f"{self.name}: {parent.component} has no port {port!r}; its ports are {list(ports)}"
                )
            resolved.append((parent, port))
        return resolved

    def _resolve_positions(self, component: Component, positions) -> Optional[tuple[int, ...]]:
        if positions is None:
            return None
        if isinstance(positions, int):
            positions = [positions]
        pos = tuple(sorted(set(int(p) for p in positions)))
        if not pos or pos[0] < 0:
            raise HypothesisError(
                f"{self.name}: claim({component}, positions={positions!r}): positions must be a "
                f"non-empty set of non-negative ints (or None for all positions)"
            )
        return pos

    def _add_edge(self, child: Claim, parent: Claim, port: str, positions) -> Edge:
        for edge in self.children(parent):
            if edge.port == port and edge.child.component == child.component:
                raise HypothesisError(
                    f"{self.name}: {child.component} is already claimed into {parent}.{port} (as "
                    f"{edge.child}); a component can be claimed only once into one port of one parent: "
                    f"merge the two claims into one with a combined feature"
                )
        if child is parent:
            raise HypothesisError(f"{self.name}: claim {child} cannot feed itself")
        edge = Edge(child=child, parent=parent, port=port, positions=positions, seq=self._next_edge)
        self._next_edge += 1
        self._graph.add_edge(child, parent, key=port, edge=edge)
        return edge
