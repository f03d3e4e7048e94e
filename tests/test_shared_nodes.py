"""Nodes shared across the schedules of one batched call (scrub/engine/shared.py): a value is
computed once however many schedules hold the node, and nodes that merely look alike are kept
apart."""

from __future__ import annotations

import pytest
import torch

import scrub
from scrub.engine import BatchedEngine
from scrub.engine import shared
from scrub.engine.positions import node_positions
from scrub.model import ModelView
from test_batched_engine import DATA, MODEL_ATTN, MODEL_MLP, N_POS, engines_for, induction_like, max_diff, model_for, with_mlp

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.requires_hooked]


def _needed(schedules, causal=True):
    found = {}
    for s in schedules:
        found.update(node_positions(s.root, tuple(range(N_POS)), N_POS, causal))
    return found


def test_the_same_schedule_twice_is_computed_once(monkeypatch):
    model = model_for(MODEL_ATTN)
    s = scrub.plan(induction_like(model.cfg), DATA, 0, model=model)
    calls = []
    original = ModelView.head_output
    monkeypatch.setattr(ModelView, "head_output", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    engine = BatchedEngine(model, DATA)
    one = engine.run(s)
    n_alone = len(calls)
    calls.clear()
    again = scrub.plan(induction_like(model.cfg), DATA, 0, model=model)  # equal rows, new objects
    a, b = engine.run_many([s, again])
    assert len(calls) == n_alone  # the second copy cost nothing
    assert torch.equal(a, one) and torch.equal(b, one)
    same = shared.representatives([s, again], _needed([s, again]))
    for x, y in zip(s.nodes(), again.nodes()):
        assert same[id(y)] == id(x)


def test_leave_one_out_variants_share_what_was_drawn_before_the_removed_claim():
    model = model_for(MODEL_MLP)
    h = with_mlp(model.cfg)
    full = scrub.plan(h, DATA, 4, model=model)
    last = [c for c in h.claims if not c.is_output][-1]  # MLP(0): claimed last, drawn last
    variant = scrub.plan(h.without(last), DATA, 4, model=model)
    same = shared.representatives([full, variant], _needed([full, variant], causal=False))
    # the output's first child (MLP 1) loses a child, so it differs; its head child was drawn
    # before MLP(0) and is shared, as is the head feeding the output directly
    mlp_full, head_full = full.root.children
    mlp_var, head_var = variant.root.children
    assert same[id(mlp_var)] != id(mlp_full) and same[id(variant.root)] != id(full.root)
    assert same[id(mlp_var.children[0])] == id(mlp_full.children[0])
    # the batched results equal each schedule run alone
    engine, reference = engines_for(MODEL_MLP)
    got = engine.run_many([full, variant])
    for s, g in zip((full, variant), got):
        assert max_diff(g, reference.run(s)) < 1e-4


def test_different_rows_are_never_shared(monkeypatch):
    """Every tensor hashed alike: the content check still tells different rows apart."""
    monkeypatch.setattr(shared, "_digest", lambda host: ("all the same",))
    model = model_for(MODEL_ATTN)
    h = induction_like(model.cfg)
    s0, s1 = (scrub.plan(h, DATA, seed, model=model) for seed in (0, 1))
    same = shared.representatives([s0, s1], _needed([s0, s1]))
    for x, y in zip(s0.nodes(), s1.nodes()):
        if not torch.equal(x.datum, y.datum) or (x.other is not None and not torch.equal(x.other, y.other)):
            assert same[id(y)] != id(x)
    engine, reference = engines_for(MODEL_ATTN)
    a, b = engine.run_many([s0, s1])
    assert max_diff(a, reference.run(s0)) < 1e-4 and max_diff(b, reference.run(s1)) < 1e-4
    assert max_diff(a, b) > 1e-3


def test_chunks_are_sized_by_the_values_held_not_by_the_nodes():
    """A node that shares another's value holds no copy of it, so copies of one schedule make the
    chunks smaller only by their logits, and never as small as schedules that share nothing; the
    chunked results are the unchunked ones."""
    model = model_for(MODEL_ATTN)
    h = induction_like(model.cfg)
    engine = BatchedEngine(model, DATA)
    copies = [scrub.plan(h, DATA, 0, model=model) for _ in range(6)]  # equal rows, new objects
    seeds = [scrub.plan(h, DATA, seed, model=model) for seed in range(6)]  # other rows: nothing shared
    last = [N_POS - 1]
    budget = 40_000.0  # bytes for node values: a few rows
    shared_rows = engine.chunk_size(copies, last, node_bytes=budget)
    distinct_rows = engine.chunk_size(seeds, last, node_bytes=budget)
    alone_rows = engine.chunk_size(copies[:1], last, node_bytes=budget)
    assert distinct_rows < shared_rows <= alone_rows
    small = BatchedEngine(model, DATA, memory_budget_mb=0.05)  # forces chunks of a few rows
    for got, want in zip(small.run_many(copies, positions=last), engine.run_many(copies, positions=last)):
        assert max_diff(got, want) < 1e-5
