"""`Hypothesis.full`: the whole model as a hypothesis (every writer EXACT into every later port)."""

from __future__ import annotations

import pytest

import scrub
from scrub import MLP, Embed, Head, Hypothesis, PosEmbed
from scrub.components import is_upstream, ports_of
from scrub.errors import HypothesisError
from scrub.hypothesis.full import components_of, tree_size
from scrub.search import walk

pytestmark = pytest.mark.usefixtures("one_thread")


def test_full_has_every_edge_exactly_once(any_model):
    h = Hypothesis.full(any_model)
    cfg = any_model.cfg
    comps = components_of(any_model)
    assert {c.component for c in h.claims[1:]} == set(comps)
    expected = set()
    for child in comps:
        expected.add((child, "output", "in"))
        for parent in comps:
            if is_upstream(child, parent, cfg.n_layers):
                expected.update((child, parent, port) for port in ports_of(parent))
    got = {(e.child.component, "output" if e.parent.is_output else e.parent.component, e.port) for e in h.edges}
    assert got == expected and len(h.edges) == len(expected)
    assert all(c.feature is scrub.EXACT for c in h.claims[1:])
    h.validate(any_model)


def test_full_recovers_everything_by_the_identity(any_model, data):
    h = Hypothesis.full(any_model)
    res = scrub.evaluate(h, any_model, data, seeds=2)
    assert res.m_scrub == pytest.approx(res.m_model, abs=1e-4)
    assert res.loss_recovered == pytest.approx(1.0, abs=1e-3)
    if any_model.cfg.attn_only:  # the reference engine runs a forward pass per tree node: keep it small
        ref = scrub.evaluate(h, any_model, data.head(12), seeds=1, engine="reference")
        assert ref.m_scrub == pytest.approx(ref.m_model, abs=1e-4)


def test_tree_size_counts_the_treeified_nodes(attn_model):
    h = Hypothesis.full(attn_model)
    assert tree_size(h) == sum(1 for _ in h.tree().walk()) == len(h.claims)  # every claim complete: a leaf
    # uncollapsed, 2 layers x 3 heads, attention-only: layer-0 head 1 + 3*2, layer-1 head 1 + 3*(2 + 3*7)
    l0 = 1 + 3 * 2
    l1 = 1 + 3 * (2 + 3 * l0)
    assert tree_size(h, collapse=False) == 1 + 2 + 3 * l0 + 3 * l1


def test_full_layers_and_bad_layers(mlp_model):
    h = Hypothesis.full(mlp_model, layers=[1])
    assert {c.component for c in h.claims[1:]} == {Embed(), PosEmbed(), MLP(1)} | {Head(1, i) for i in range(3)}
    with pytest.raises(HypothesisError, match="do not exist"):
        Hypothesis.full(mlp_model, layers=[5])


def test_search_from_full_batched_equals_one_scrub_per_candidate_and_reports_steps(mlp_model, data, monkeypatch):
    lines: list[str] = []
    fast = scrub.search(Hypothesis.full(mlp_model), mlp_model, data.head(16), tau=0.05, metric="kl", progress=lines.append)
    slow = scrub.search(Hypothesis.full(mlp_model), mlp_model, data.head(16), tau=0.05, metric="kl",
                        batch_candidates=False)
    with monkeypatch.context() as m:  # copies scored a few at a time, as for a large hypothesis
        m.setattr(walk, "_EDGES_AT_ONCE", 400)
        few = scrub.search(Hypothesis.full(mlp_model), mlp_model, data.head(16), tau=0.05, metric="kl")
    assert few.calls > fast.calls
    for other in (slow, few):
        assert sorted(map(str, fast.hypothesis.edges)) == sorted(map(str, other.hypothesis.edges))
        assert fast.loss_recovered == pytest.approx(other.loss_recovered, abs=1e-6)
    assert len(lines) >= 1 and all("tree nodes" in line and "hypotheses scored" in line for line in lines)
    counts = [int(line.rsplit("; ", 1)[1].split()[0]) for line in lines]  # "...; N hypotheses scored"
    assert counts == sorted(counts) and counts[-1] <= fast.scored
    assert fast.hypothesis.shape == fast.start.shape is not None
