"""Hypotheses: graphs of claims about which components carry which features into which ports.

A `Hypothesis` is a DAG of `Claim`s rooted at the model output. Each edge ``child -> parent``
names the port of the parent that the child feeds (``q``, ``k``, ``v`` of a head; ``in`` of an
MLP or of the output) and, optionally, the positions at which the claim holds. The graph is a
networkx ``MultiDiGraph`` (a child may feed several ports of one parent).

Building a hypothesis is pure: nothing touches a model until `Hypothesis.validate` (called by
`scrub.evaluate` and `scrub.plan`) checks it against one. `Hypothesis.tree` unrolls the DAG into
its treeified form: every path from a claim to the root becomes its own `TreeSpec` node, so a
claim reached by two paths is sampled independently for each. For a hypothesis that records its
model's shape (`Hypothesis.full` does), a *complete* claim (its whole upstream claimed EXACT) is
kept as a leaf on its datum, which computes the same values (`collapse`).

The package, bottom up: `values` (Claim, Edge, TreeSpec), `shape` (ModelShape), `collapse`
(complete claims), `graph` (reading the graph, treeification), `building` (claims and edges), `checking` (against a
model), `variants` (without / only_edges), and `core` (the thin `Hypothesis` class).
"""

from scrub.hypothesis.core import Hypothesis
from scrub.hypothesis.shape import ModelShape
from scrub.hypothesis.values import Claim, Edge, Into, TreeSpec

__all__ = ["Claim", "Edge", "Hypothesis", "TreeSpec", "ModelShape", "Into"]
