"""Complete claims treeify as leaves (`scrub.hypothesis.collapse`), and nothing else changes.

(a) the collapsed tree of `Hypothesis.full` on a GPT-2-small-shaped model is the output and one
    leaf per claim; the uncollapsed count still follows the path recurrence;
(b) exactness: when the complete subtree is the last thing sampled, every other node's draws are
    bit-identical with and without the collapse, and both engines give equal logits;
(c) full-minus-random-edges hypotheses (property test): batched == reference, and collapse on
    or off gives equal logits.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scrub
from scrub import EXACT, Embed, Feature, Head, Hypothesis, PosEmbed
from scrub.components import is_upstream, ports_of, stage
from scrub.engine import ReferenceEngine
from scrub.engine.batched import BatchedEngine
from scrub.errors import HypothesisError
from scrub.hypothesis import ModelShape, collapse
from scrub.hypothesis.full import components_of, tree_size
from scrub.search.changes import RemoveEdge, apply, edge_key

from conftest import random_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

GPT2_SHAPE = ModelShape(n_layers=12, n_heads=12, n_ctx=32, attn_only=False)
DATA = random_dataset(n=16, seed=5, name="collapse")


def paths_count(comps: list, n_layers: int) -> int:
    """Tree nodes of `full` over ``comps`` without collapse, by the path recurrence (independent
    of the graph): a claim is one node plus, per port, the trees of every component upstream."""

    @cache
    def size(i: int) -> int:
        c = comps[i]
        below = sum(size(j) for j, u in enumerate(comps) if is_upstream(u, c, n_layers))
        return 1 + len(ports_of(c)) * below

    return 1 + sum(size(i) for i in range(len(comps)))


# ---- (a) the size of full's tree ------------------------------------------------------------------


def test_full_of_gpt2_shape_collapses_to_a_leaf_per_claim():
    h = Hypothesis.full(GPT2_SHAPE)
    assert h.shape == GPT2_SHAPE
    tree = h.tree()
    assert len(tree.children) == len(h.claims) - 1 == len(components_of(GPT2_SHAPE))
    assert all(c.is_leaf and c.complete and not c.children for c in tree.children)
    assert tree_size(h) == len(h.claims) == sum(1 for _ in tree.walk())


@pytest.mark.parametrize("shape", [
    ModelShape(n_layers=3, n_heads=2, n_ctx=8, attn_only=False, parallel_blocks=True),
    ModelShape(n_layers=3, n_heads=2, n_ctx=8, attn_only=False, shortformer=True),
    ModelShape(n_layers=3, n_heads=2, n_ctx=8, attn_only=True, positional="rotary"),
], ids=["parallel", "shortformer", "rotary"])
def test_full_collapses_for_every_block_and_position_kind(shape):
    h = Hypothesis.full(shape)
    h.validate(shape)
    assert (PosEmbed() in {c.component for c in h.claims}) == shape.has_pos_embed
    assert all(node.complete for node in h.tree().children)
    assert tree_size(h) == len(h.claims) < tree_size(h, collapse=False)
    # with parallel blocks a head does not feed its layer's MLP, so the MLP needs no edge from it
    mlp = [c for c in h.claims if c.component == scrub.MLP(1)]
    if shape.parallel_blocks:
        assert not any(e.child.component == Head(1, 0) for e in h.children(mlp[0]))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_uncollapsed_size_is_unchanged(k):
    layers = range(12 - k, 12)
    h = Hypothesis.full(GPT2_SHAPE, layers=layers)
    assert tree_size(h, collapse=False) == paths_count(components_of(GPT2_SHAPE, layers), 12)


def test_tree_size_matches_the_collapsed_tree_of_a_variant(attn_model):
    h = Hypothesis.full(attn_model)
    h2 = apply(h, [RemoveEdge(str(Head(0, 1)), str(Head(1, 2)), "k")])
    n = sum(1 for _ in h2.tree().walk())
    assert tree_size(h2) == n < tree_size(h2, collapse=False)
    # Head(1, 2) lost a child: its copy is expanded, every other claim is still a leaf
    expanded = [node.claim.name for node in h2.tree().walk() if node.children]
    assert expanded == ["output", str(Head(1, 2))]


def test_a_claim_is_complete_only_with_every_upstream_writer_exact_everywhere(attn_model):
    shape = ModelShape.of(attn_model)

    def head_with(feature=EXACT, positions=None, skip=None, scrub_inputs=False):
        h = Hypothesis("h", shape=attn_model)
        out = h.output()
        top = h.claim(Head(1, 0), EXACT, into=out, scrub_inputs=scrub_inputs)
        ports = [(top, p) for p in "qkv"]
        for c in components_of(attn_model):
            if c == skip or not is_upstream(c, Head(1, 0), 2):
                continue
            f = feature if c == Embed() else EXACT
            claim = h.claim(c, f, into=ports, positions=positions if c == Embed() else None)
            if isinstance(c, Head):
                h.claim(Embed(), EXACT, into=[(claim, p) for p in "qkv"], name=f"emb->{c}")
                h.claim(PosEmbed(), EXACT, into=[(claim, p) for p in "qkv"], name=f"pos->{c}")
        return h, top

    h, top = head_with()
    assert top in collapse.complete_claims(h, shape)
    for bad in [dict(feature=Feature.token()), dict(positions=[0, 1]), dict(skip=Head(0, 2)), dict(skip=PosEmbed())]:
        h, top = head_with(**bad)
        assert top not in collapse.complete_claims(h, shape), bad
    h, top = head_with(scrub_inputs=True)
    assert top not in collapse.complete_claims(h, shape)
    # a layer-0 head whose own children are incomplete (scrub_inputs) does not make its parent complete
    h, top = head_with()
    h2 = apply(h, [RemoveEdge(f"emb->{Head(0, 0)}", str(Head(0, 0)), "q")])
    assert str(Head(0, 0)) in {c.name for c in h2.claims}
    complete = {c.name for c in collapse.complete_claims(h2, shape)}
    assert str(Head(0, 1)) in complete and str(Head(0, 0)) not in complete and str(Head(1, 0)) not in complete
    # no recorded shape: nothing collapses
    plain = Hypothesis.full(attn_model)
    plain._shape = None
    assert not any(node.complete for node in plain.tree().walk())


# ---- the recorded shape --------------------------------------------------------------------------


def test_variants_keep_the_shape_and_another_model_is_refused(attn_model, mlp_model, data):
    h = Hypothesis.full(attn_model)
    first = h.claims[1]
    for variant in [h.without(first), h.only_edges(h.edges[:5], "few"), apply(h, [RemoveEdge.of(h.edges[0])])]:
        assert variant.shape == h.shape
    other = Hypothesis("x", shape=mlp_model)
    other.claim(Head(0, 0), EXACT, into=other.output())
    with pytest.raises(HypothesisError, match="recorded for a model shape"):
        scrub.evaluate(other, attn_model, data)
    with pytest.raises(HypothesisError, match="Hypothesis.full\\(model\\)"):
        scrub.search(h, mlp_model, data)


def test_store_keys_tell_a_recorded_shape_apart(attn_model):
    from scrub.store.keys import hypothesis_fingerprint

    h = Hypothesis.full(attn_model)
    plain = Hypothesis.full(attn_model)
    plain._shape = None  # the same graph, never collapsed: other draws, so another cell
    assert hypothesis_fingerprint(h) != hypothesis_fingerprint(plain)
    assert hypothesis_fingerprint(h) == hypothesis_fingerprint(Hypothesis.full(attn_model))


# ---- (b) exactness: the collapsed subtree sampled last --------------------------------------------


def last_complete(model, feature) -> Hypothesis:
    """Two incomplete claims into the output, then (claimed last, so sampled last) Head(1, 2) with
    ``feature`` and its whole upstream EXACT: a complete claim."""
    h = Hypothesis("complete last", shape=model)
    out = h.output()
    ind = h.claim(Head(1, 0), EXACT, into=out)
    h.claim(Embed(), Feature.token(), into=(ind, "q"))
    h.claim(Head(0, 1), Feature.prev_token(), into=(ind, "k"))
    h.claim(PosEmbed(), Feature("first", lambda d: d.tokens[:, 0]), into=out)
    top = h.claim(Head(1, 2), feature, into=out)
    ports = [(top, p) for p in "qkv"]
    emb, pos = h.claim(Embed(), EXACT, into=ports, name="E"), h.claim(PosEmbed(), EXACT, into=ports, name="P")
    for i in range(model.cfg.n_heads):
        h.claim(Head(0, i), EXACT, into=ports, name=f"h0.{i}")
    for i in range(model.cfg.n_heads):
        h.connect(emb, [(h.find(f"h0.{i}"), p) for p in "qkv"])
        h.connect(pos, [(h.find(f"h0.{i}"), p) for p in "qkv"])
    return h


def plans(h, seed: int, monkeypatch):
    collapsed = scrub.plan(h, DATA, seed)
    with monkeypatch.context() as m:
        m.setattr(collapse, "ENABLED", False)
        full = scrub.plan(h, DATA, seed)
    return collapsed, full


@pytest.mark.parametrize("feature", [EXACT, Feature.token()], ids=["exact", "per-position"])
def test_collapse_changes_no_other_draw_and_no_value(attn_model, feature, monkeypatch):
    h = last_complete(attn_model, feature)
    collapsed, full = plans(h, 3, monkeypatch)
    a, b = list(collapsed.nodes()), list(full.nodes())
    top = [n for n in a if n.claim.name == str(Head(1, 2))]
    assert len(top) == 1 and top[0].is_leaf and top[0].per_position == (feature is not EXACT)
    assert len(b) > len(a)
    # every node sampled before the complete one is the same, draw for draw
    k = a.index(top[0])
    assert k == len(a) - 1  # sampled last
    for x, y in zip(a[:k], b[:k]):
        assert x.claim is y.claim and torch.equal(x.datum, y.datum)
        assert (x.other is None and y.other is None) or torch.equal(x.other, y.other)
    assert b[k].claim is top[0].claim and torch.equal(b[k].datum, top[0].datum) and not b[k].is_leaf
    for engine in (BatchedEngine(attn_model, DATA), ReferenceEngine(attn_model, DATA)):
        torch.testing.assert_close(engine.run(collapsed), engine.run(full), atol=2e-5, rtol=1e-5)


def test_results_equal_with_and_without_collapse(attn_model, monkeypatch):
    h = last_complete(attn_model, EXACT)
    res = [scrub.evaluate(h, attn_model, DATA, seeds=2, engine=e, n_boot=10) for e in ("batched", "reference")]
    with monkeypatch.context() as m:
        m.setattr(collapse, "ENABLED", False)
        res += [scrub.evaluate(h, attn_model, DATA, seeds=2, engine=e, n_boot=10) for e in ("batched", "reference")]
    for r in res[1:]:
        torch.testing.assert_close(r.rows.scrub, res[0].rows.scrub, atol=2e-5, rtol=1e-5)


# ---- (c) full recovers 100%; full minus random edges: batched == reference -------------------------


def test_full_still_recovers_everything(any_model, data):
    h = Hypothesis.full(any_model)
    assert tree_size(h) == len(h.claims)
    for engine in ("batched", "reference"):
        res = scrub.evaluate(h, any_model, data.head(12), seeds=2, engine=engine, n_boot=10)
        assert res.m_scrub == pytest.approx(res.m_model, abs=1e-4)
        assert res.loss_recovered == pytest.approx(1.0, abs=1e-3)


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_full_minus_random_edges_batched_equals_reference(mlp_model, monkeypatch, data, seed):
    h = Hypothesis.full(mlp_model)
    edges = h.edges
    drop = data.draw(st.sets(st.integers(0, len(edges) - 1), min_size=1, max_size=4), label="dropped edges")
    variant = apply(h, [RemoveEdge.of(edges[i]) for i in sorted(drop)], name="minus edges")
    # the oracle for a variant of full: a claim is complete iff no edge into it or into anything
    # upstream of it was lost (removed, or gone with a claim that no longer reaches the output)
    kept = {edge_key(e) for e in variant.edges}
    lost = [e for e in edges if edge_key(e) not in kept and not e.parent.is_output]
    n = mlp_model.cfg.n_layers
    expect = {c.name for c in variant.claims[1:]
              if not any(e.parent.name == c.name or stage(e.parent.component, n) < stage(c.component, n) for e in lost)}
    assert {c.name for c in collapse.complete_claims(variant, variant.shape)} - {"output"} == expect
    collapsed, full = plans(variant, seed, monkeypatch)
    assert {node.claim.name for node in collapsed.nodes() if node.is_leaf} == expect
    got = BatchedEngine(mlp_model, DATA).run(collapsed)
    torch.testing.assert_close(got, ReferenceEngine(mlp_model, DATA).run(collapsed), atol=2e-5, rtol=1e-5)
    assert sum(1 for _ in collapsed.nodes()) <= sum(1 for _ in full.nodes())
