"""`Hypothesis`: the class users build, a thin face over the package's functions.

It holds the state (a name, the claims in creation order, the networkx graph, the root and an
edge counter); building (`building`), reading (`graph`), checking against a model (`checking`)
and deriving variants (`variants`) are plain functions of it.
"""

from __future__ import annotations

from typing import Iterable, Optional

import networkx as nx

from scrub.components import Component, Output
from scrub.data import Feature
from scrub.errors import HypothesisError
from scrub.hypothesis import building, checking, graph, variants
from scrub.hypothesis.shape import ModelShape
from scrub.hypothesis.values import Claim, Edge, Into, TreeSpec

__all__ = ["Hypothesis"]


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

    ``Hypothesis(name, shape=model)`` records the model (or `ModelShape`) it is for: see `shape`.
    Claims are immutable; building adds claims and edges. `without` and `only_edges` return new
    hypotheses (the subgraph variants reports use). The graph is available, frozen, as `graph`.
    """

    def __init__(self, name: str = "hypothesis", shape=None) -> None:
        if not isinstance(name, str) or not name:
            raise HypothesisError(f"a hypothesis needs a non-empty name string, got {name!r}")
        self.name = name
        self._shape: Optional[ModelShape] = None if shape is None else ModelShape.of(shape)
        self._graph = nx.MultiDiGraph()
        self._claims: list[Claim] = []
        self._root: Optional[Claim] = None
        self._next_edge = 0

    @classmethod
    def full(cls, model, name: str = "full model", layers=None) -> "Hypothesis":
        """The whole model as a hypothesis: every component EXACT into every port of every later
        component and the output (recovers 100%; see `scrub.hypothesis.full` for its size). It
        records the model's `shape`, so its complete claims treeify as leaves."""
        from scrub.hypothesis.full import full

        return full(cls, model, name, layers)

    # ---- building -----------------------------------------------------------------------------

    def output(self) -> Claim:
        """The root claim: the model output (logits). Calling it again returns the same claim."""
        if self._root is None:
            self._root = building.add_claim(self, Output(), None, "output")
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
        return building.claim(self, component, feature, into, positions, name, scrub_inputs)

    def connect(self, child: Claim, into: Into, positions: Optional[Iterable[int]] = None) -> None:
        """Make an existing claim feed further ports or parents (it is treeified per path)."""
        building.connect(self, child, into, positions)

    # ---- reading ------------------------------------------------------------------------------

    @property
    def shape(self) -> Optional[ModelShape]:
        """The `ModelShape` this hypothesis is recorded for (``Hypothesis(name, shape=model)``,
        `Hypothesis.full`; variants keep it), or None.

        With a shape, treeification keeps every *complete* claim (all its upstream claimed EXACT,
        `scrub.hypothesis.collapse`) as a leaf on its datum, which computes the same values
        without expanding its subtree, and scrubbing it on a model of another shape is refused."""
        return getattr(self, "_shape", None)  # None also for a hypothesis pickled before shapes

    @property
    def root(self) -> Claim:
        """The output claim (an error before `output` is called)."""
        return graph.root(self)

    @property
    def claims(self) -> tuple[Claim, ...]:
        """All claims in creation order (the root first)."""
        return tuple(self._claims)

    @property
    def edges(self) -> tuple[Edge, ...]:
        """All edges, ordered by the child's creation, then insertion."""
        return graph.edges(self)

    @property
    def graph(self) -> nx.MultiDiGraph:
        """A frozen copy of the graph: nodes are claims, edges child -> parent with key = port."""
        return nx.freeze(self._graph.copy())

    def children(self, claim: Claim) -> tuple[Edge, ...]:
        """Edges into ``claim``, in the order their children were claimed."""
        return graph.children(self, claim)

    def parents(self, claim: Claim) -> tuple[Edge, ...]:
        """Edges out of ``claim``, in insertion order."""
        return graph.parents(self, claim)

    def find(self, name_or_component) -> Claim:
        """The claim with this name, or the only claim of this component."""
        return graph.find(self, name_or_component)

    def tree(self) -> TreeSpec:
        """The treeified hypothesis: one `TreeSpec` per path from a claim to the root.

        Raises:
            HypothesisError: the graph has a cycle (see `validate_structure`).
        """
        return graph.tree(self)

    # ---- checking -----------------------------------------------------------------------------

    def validate(self, model, n_pos: Optional[int] = None) -> None:
        """Check the hypothesis against a model (and a dataset's sequence length) before running.

        ``model`` is a HookedTransformer, a ModelView or a `ModelShape`.

        Raises:
            HypothesisError / ComponentError: a cycle, a claim that feeds nothing, a component or
                port the model lacks, a child that is not upstream of its parent (with parallel
                attention and MLP blocks a head does not feed the MLP of its own layer),
                positions out of range.
        """
        checking.validate(self, model, n_pos)

    def validate_structure(self) -> None:
        """Model-independent checks: an output exists, no cycle, every claim reaches the output."""
        graph.check_structure(self)

    # ---- variants -----------------------------------------------------------------------------

    def without(self, *claims: Claim, name: Optional[str] = None) -> "Hypothesis":
        """A copy with ``claims`` removed, and every claim that then no longer reaches the output."""
        return variants.without(self, claims, name)

    def only_edges(self, keep: Iterable[Edge], name: str) -> "Hypothesis":
        """A copy keeping just the given edges (and the claims that still reach the output)."""
        return variants.only_edges(self, keep, name)

    # ---- printing -----------------------------------------------------------------------------

    def __repr__(self) -> str:
        shape = "" if self.shape is None else f", shape={self.shape.n_layers}x{self.shape.n_heads}"
        return f"Hypothesis({self.name!r}, claims={len(self._claims)}, edges={self._graph.number_of_edges()}{shape})"

    def __str__(self) -> str:
        return graph.describe(self)
