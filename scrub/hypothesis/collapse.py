"""Complete claims: subtrees that treeification does not expand, because they compute the clean model.

A claim is *complete* (for a model of a given `ModelShape`) when

(a) every one of its ports receives, as claimed children with the `EXACT` feature at every
    position (edge positions ``None``), every component of the model that writes into the
    residual stream upstream of it (`ModelShape.writers`, ordered by
    `scrub.components.stage`, which knows parallel blocks and shortformer models);
(b) every such child is itself complete (an embedding, which reads nothing, is complete unless it
    sets ``scrub_inputs``); and
(c) it does not set ``scrub_inputs``.

A tree copy of a complete claim then computes exactly the model's clean output of its component
on the copy's datum: by the residual decomposition (DESIGN.md section 1) each port reads
``resid_p(other) - sum_k out_k(other) + sum_k scrubbed_k``, the two sums run over every writer
upstream, so what is left of ``resid_p(other)`` is the constant biases, and every scrubbed child
is (by induction) the clean output on the same datum (EXACT). Nothing of the "other" datum flows
in anywhere below it. So a complete claim is treeified as a LEAF on its datum ("its whole
upstream runs on its datum"), which both engines compute from one clean pass: `Hypothesis.full`
of GPT-2 small's 12 layers treeifies into one leaf per child of the output instead of an
astronomical tree. The only observable change is the random stream: the collapsed subtree draws
no (unused) "other" data, so draws after it shift.

Completeness needs the model's shape, which a hypothesis records (`Hypothesis.full` does;
``Hypothesis(name, shape=...)``); a hypothesis without one is never collapsed.
"""

from __future__ import annotations

from collections import defaultdict

from scrub.components import Component, Output, ports_of, stage
from scrub.hypothesis.shape import ModelShape
from scrub.hypothesis.values import Claim, HypothesisState

__all__ = ["complete_claims", "upstream_writers"]

# internal switch for tests only: False treeifies complete claims in full (the old random stream)
ENABLED = True


def upstream_writers(shape: ModelShape) -> dict[int, int]:
    """``stage -> number of writers of the residual stream strictly upstream of that stage``, for
    every stage a component of a model of ``shape`` can have (the output's included)."""
    stages = [stage(c, shape.n_layers, shape.parallel_blocks) for c in shape.writers()]
    top = stage(Output(), shape.n_layers, shape.parallel_blocks)
    return {s: sum(1 for w in stages if w < s) for s in range(top + 1)}


def complete_claims(h: HypothesisState, shape: ModelShape) -> frozenset[Claim]:
    """The complete claims of ``h`` for a model of ``shape`` (see the module docstring); the
    output claim is included when it is complete (treeification never collapses the root)."""
    writers = set(shape.writers())
    counts = upstream_writers(shape)
    n_layers, parallel = shape.n_layers, shape.parallel_blocks
    stages = {c: stage(c.component, n_layers, parallel) for c in h._claims}
    # children are upstream of their parents (checked by validation), so visiting claims by stage
    # sees every counted child first; a child that is not upstream is simply not counted
    complete: set[Claim] = set()
    for claim in sorted(h._claims, key=stages.__getitem__):
        if claim.scrub_inputs or not (claim.is_output or claim.component in writers):
            continue
        here = stages[claim]
        fed: dict[str, set[Component]] = defaultdict(set)  # port -> complete EXACT writers feeding it
        # the graph's own adjacency dict (the `pred` view is several times slower to iterate):
        # one entry per child, {port: edge data}
        for child, by_port in h._graph._pred[claim].items():
            if child not in complete or stages[child] >= here or not child.feature.exact:
                continue
            for port, data in by_port.items():
                if data["edge"].positions is None:
                    fed[port].add(child.component)
        need = counts.get(here, -1)
        if all(len(fed[port]) == need for port in ports_of(claim.component)):
            complete.add(claim)
    return frozenset(complete)
