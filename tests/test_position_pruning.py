"""Position pruning: the batched engine computes each tree node only where the asked-for logits
depend on it (scrub/engine/positions.py), and the metrics say which positions they read.

* property-based: random hypotheses and random sets of asked-for positions on every supported
  configuration: the pruned batched logits equal the reference engine's at those positions, and
  are NaN elsewhere;
* the positions each node is needed at, worked out by hand for a small tree;
* the clean cache stores each key only at the positions some read of it needs;
* per-position copies are evaluated at their one position (counted in `ModelView.heads` calls);
* `ModelView.heads` with query positions equals the full computation at those positions;
* `scrub.evaluate` gives the same numbers whether the metric lets the engine prune or not, and a
  callable metric (which may read anything) gets every position.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scrub
from scrub import EXACT, Embed, Feature, Head, Hypothesis, ScheduleError
from scrub.engine import BatchedEngine
from scrub.engine.positions import node_positions, port_positions
from scrub.metrics import Metric, cross_entropy
from scrub.model import ModelView
from test_batched_engine import (
    CONFIGS,
    DATA,
    MODEL_ATTN,
    MODEL_MLP,
    N_POS,
    N_ROWS,
    TOKEN,
    PREV,
    engines_for,
    hypotheses,
    induction_like,
    max_diff,
    model_for,
    property_settings,
    with_mlp,
)

pytestmark = pytest.mark.usefixtures("one_thread")
ATOL = 1e-4


# ---- 1. property: pruned batched == reference at the asked-for positions ------------------------


@pytest.mark.requires_hooked
@pytest.mark.parametrize("config", list(CONFIGS))
@property_settings(8)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_pruned_run_equals_reference_at_asked_positions(config, data, seed):
    model = model_for(config)
    h = data.draw(hypotheses(model.cfg), label="hypothesis")
    asked = sorted(data.draw(st.sets(st.integers(0, N_POS - 1), min_size=1, max_size=N_POS - 1), label="positions"))
    schedule = scrub.plan(h, DATA, seed, model=model)
    batched, reference = engines_for(config)
    got = batched.run(schedule, positions=asked[::-1])  # any order in, sorted positions out
    want = reference.run(schedule)
    assert got.shape == (N_ROWS, len(asked), model.cfg.d_vocab_out)
    diff = max_diff(got, want[:, asked])
    assert diff < ATOL, f"max |pruned - reference| = {diff:.3g} at {asked}\n{h}\n{schedule}"
    assert max_diff(reference.run(schedule, positions=asked), want[:, asked]) == 0


@pytest.mark.requires_hooked
def test_many_schedules_pruned_equal_each_alone():
    model = model_for(MODEL_MLP)
    batched, _ = engines_for(MODEL_MLP)
    schedules = [scrub.plan(h, DATA, seed, model=model) for h in (with_mlp(model.cfg), induction_like(model.cfg)) for seed in (0, 1)]
    many = batched.run_many(schedules, positions=[1, 3])
    for s, m in zip(schedules, many):
        assert max_diff(m, batched.run(s)[:, [1, 3]]) < 1e-5
        assert max_diff(m, batched.run(s, positions=[1, 3])) < 1e-5


@pytest.mark.requires_hooked
def test_no_positions_asked_computes_nothing():
    model = model_for(MODEL_ATTN)
    batched, _ = engines_for(MODEL_ATTN)
    s = scrub.plan(induction_like(model.cfg), DATA, 0, model=model)
    assert batched.run(s, positions=[]).shape == (N_ROWS, 0, model.cfg.d_vocab_out)


@pytest.mark.requires_hooked
def test_positions_outside_the_dataset_are_refused():
    model = model_for(MODEL_ATTN)
    batched, _ = engines_for(MODEL_ATTN)
    s = scrub.plan(induction_like(model.cfg), DATA, 0, model=model)
    with pytest.raises(ScheduleError, match="outside"):
        batched.run(s, positions=[0, N_POS])


# ---- 2. the positions each node is needed at ----------------------------------------------------


def test_port_positions():
    assert port_positions(Head(1, 0), (2, 4), 6, causal=True) == {"q": (2, 4), "k": (0, 1, 2, 3, 4), "v": (0, 1, 2, 3, 4)}
    assert port_positions(Head(1, 0), (2,), 6, causal=False) == {"q": (2,), "k": tuple(range(6)), "v": tuple(range(6))}
    assert port_positions(scrub.MLP(0), (3,), 6, causal=True) == {"in": (3,)}


@pytest.mark.requires_hooked
def test_node_positions_by_hand():
    """Output read at position 3: head 1.0 at (3,); its q child at (3,), its k child (per-position
    previous-token head) at 0..3 with one copy per position; the copies' v child, restricted to
    positions 0..2, at the part of each copy's key range it claims; the v-and-output leaf at 0..3
    through v and at (3,) through the output."""
    model = model_for(MODEL_ATTN)
    s = scrub.plan(induction_like(model.cfg), DATA, 0, model=model)
    needed = node_positions(s.root, (3,), N_POS, causal=True)
    root = s.root
    assert needed[id(root)] == (3,)
    ind, v_leaf_out = root.children
    assert needed[id(ind)] == (3,)
    assert needed[id(v_leaf_out)] == (3,)  # the FIRST leaf also feeds the output directly
    q_leaf, prev, v_leaf = ind.children
    assert needed[id(q_leaf)] == (3,)
    assert needed[id(prev)] == (0, 1, 2, 3) and needed[id(v_leaf)] == (0, 1, 2, 3)
    assert sorted(prev.copies) == list(range(N_POS))  # planned for every position ...
    for t, copy in prev.copies.items():  # ... evaluated only where needed, at one position each
        if t <= 3:
            assert needed[id(copy)] == (t,)
            (inner_v,) = copy.children  # Embed -> v of the copy, restricted to 0..2, keys 0..t
            assert needed[id(inner_v)] == tuple(range(min(t, 2) + 1))
        else:
            assert id(copy) not in needed


@pytest.mark.requires_hooked
def test_cache_keeps_only_needed_positions():
    model = model_for(MODEL_ATTN)  # causal
    batched, _ = engines_for(MODEL_ATTN)
    h = Hypothesis("two heads")
    out = h.output()
    top = h.claim(Head(1, 1), EXACT, into=out)
    h.claim(Head(0, 0), Feature.any(), into=(top, "k"))
    s = scrub.plan(h, DATA, 0, model=model)
    needs, _ = batched._cache_needs([s], batched._needed([s], (2,)))
    assert needs[("final",)] == {2}  # the output reads position 2 only
    assert needs[("head", 1, 1)] == {2}  # head 1.1's clean output, subtracted at the output's port
    assert needs[("resid_pre", 1)] == {0, 1, 2}  # head 1.1's k port (patched by its child), keys 0..2
    assert needs[("q", 1, 1)] == {2} and needs[("v", 1, 1)] == {0, 1, 2}  # unpatched ports: clean projections
    assert ("k", 1, 1) not in needs
    assert needs[("head", 0, 0)] == {0, 1, 2}  # the k leaf (on its datum) and its clean value (subtracted)
    cache = batched._build_cache(needs, torch.arange(N_ROWS))
    assert cache.values[("v", 1, 1)].shape == (N_ROWS, 3, model.cfg.d_head)
    assert cache.values[("final",)].shape == (N_ROWS, 1, model.cfg.d_model)
    assert cache.values[("resid_pre", 1)].shape == (N_ROWS, 3, model.cfg.d_model)
    full = ModelView.from_hooked(model).clean_pass(DATA.tokens)
    assert max_diff(cache.get(("final",), torch.arange(4), (2,)), full.resid_final[:4, [2]]) < 1e-6
    assert max_diff(cache.get(("resid_pre", 1), torch.arange(4), (0, 2)), full.resid_pre[1][:4, [0, 2]]) < 1e-6
    with pytest.raises(ScheduleError, match="internal"):
        cache.get(("final",), torch.arange(4), (3,))
    # a bidirectional model reads every key
    model_b = model_for(MODEL_MLP)
    batched_b, _ = engines_for(MODEL_MLP)
    s_b = scrub.plan(h, DATA, 0, model=model_b)
    needs_b, _ = batched_b._cache_needs([s_b], batched_b._needed([s_b], (2,)))
    assert needs_b[("resid_pre", 1)] == set(range(N_POS)) and needs_b[("final",)] == {2}


@pytest.mark.requires_hooked
def test_per_position_copies_evaluated_at_their_position(monkeypatch):
    """A head with a per-position feature and children is treeified into one copy per position;
    asked for one output position, the engine evaluates one copy, at one query position."""
    model = model_for(MODEL_ATTN)
    h = Hypothesis("per-position inner node")
    out = h.output()
    top = h.claim(Head(1, 0), TOKEN, into=out)  # per position, with a child: treeified
    h.claim(Embed(), PREV, into=(top, "q"))
    s = scrub.plan(h, DATA, 0, model=model)
    calls: list[tuple[int, int]] = []  # (rows, query positions) per ModelView.head_output call
    original = ModelView.head_output

    def spy(self, layer, head, q, k, v, q_positions=None):
        calls.append((q.shape[0], q.shape[1]))
        return original(self, layer, head, q, k, v, q_positions=q_positions)

    monkeypatch.setattr(ModelView, "head_output", spy)
    engine = BatchedEngine(model, DATA)
    engine.run(s, positions=[2])
    assert calls == [(N_ROWS, 1)]  # one copy (position 2), one query position
    calls.clear()
    engine.run(s)
    assert calls == [(N_ROWS * N_POS, 1)]  # every copy, each at its own position, in one call
    monkeypatch.undo()
    _, reference = engines_for(MODEL_ATTN)
    assert max_diff(BatchedEngine(model, DATA).run(s), reference.run(s)) < ATOL


# ---- 3. ModelView.heads with query positions ----------------------------------------------------


@pytest.mark.requires_hooked
@pytest.mark.parametrize("config", [MODEL_ATTN, MODEL_MLP, "relu-short-causal-None", "gelu-short-bidir-LN"])
def test_heads_at_query_positions(config):
    view = ModelView.from_hooked(model_for(config))
    g = torch.Generator().manual_seed(0)
    d = view.config.d_model
    q, k, v = (torch.randn(6, N_POS, d, generator=g) for _ in range(3))
    index = torch.tensor([0, 1, 0, 1, 1, 0])
    full = view.heads(1, index, q, k, v)  # [6, p, d]
    asked = torch.tensor([1, 3])
    got = view.heads(1, index, q[:, asked], k, v, q_positions=asked)
    assert max_diff(got, full[:, asked]) < 1e-5
    per_row = torch.tensor([[0, 4], [2, 3], [1, 2], [0, 1], [3, 4], [2, 4]])
    rows = torch.arange(6)[:, None]
    got = view.heads(1, index, q[rows, per_row], k, v, q_positions=per_row)
    assert max_diff(got, full[rows, per_row]) < 1e-5
    if view.config.causal:  # keys past the last query are not needed, nor read
        at2 = torch.tensor([2])
        got = view.heads(1, index, q[:, [2]], k[:, :3], v[:, :3], q_positions=at2)
        assert max_diff(got, full[:, [2]]) < 1e-5
        junk_k, junk_v = k.clone(), v.clone()
        junk_k[:, 3:], junk_v[:, 3:] = 1e6, -1e6
        got = view.heads(1, index, q[:, [2]], junk_k, junk_v, q_positions=at2)
        assert max_diff(got, full[:, [2]]) < 1e-5
    with pytest.raises(ScheduleError, match="q_positions"):
        view.heads(1, index, q[:, :2], k, v)


@pytest.mark.requires_hooked
@pytest.mark.parametrize("config", [MODEL_ATTN, "relu-short-causal-None", "gelu-short-bidir-LN"])
def test_head_projection_and_output_compose_to_heads(config):
    """heads() == head_output(head_projection(q), ...(k), ...(v)), and the clean pass keeps the
    projections of its own inputs."""
    view = ModelView.from_hooked(model_for(config))
    g = torch.Generator().manual_seed(1)
    q_in, k_in, v_in = (torch.randn(4, N_POS, view.config.d_model, generator=g) for _ in range(3))
    keys = torch.arange(N_POS)
    asked = torch.tensor([1, 4])
    q = view.head_projection(1, 1, "q", q_in[:, asked], asked)
    k = view.head_projection(1, 1, "k", k_in, keys)
    v = view.head_projection(1, 1, "v", v_in, keys)
    assert q.shape == (4, 2, view.config.d_head)
    got = view.head_output(1, 1, q, k, v, q_positions=asked)
    want = view.heads(1, torch.ones(4, dtype=torch.long), q_in, k_in, v_in)[:, asked]
    assert max_diff(got, want) < 1e-5
    clean = view.clean_pass(DATA.tokens[:4])
    resid = clean.resid_pre[1]
    for port, stored in (("q", clean.head_q), ("k", clean.head_k), ("v", clean.head_v)):
        assert max_diff(stored[1][:, :, 1], view.head_projection(1, 1, port, resid, keys)) < 1e-5


@pytest.mark.requires_hooked
def test_forward_at_positions():
    view = ModelView.from_hooked(model_for(MODEL_MLP))
    full = view.forward(DATA.tokens[:4])
    assert max_diff(view.forward(DATA.tokens[:4], positions=torch.tensor([0, 4])), full[:, [0, 4]]) < 1e-6


# ---- 4. metrics and evaluate --------------------------------------------------------------------


def test_builtin_metrics_read_the_scored_positions():
    for name in ("cross_entropy", "accuracy", "kl", "target_logit", "logit_diff"):
        assert scrub.metrics.resolve(name).reads == "scored", name
    assert scrub.metrics.resolve(lambda logits, batch: logits[:, 0, 0]).reads == "all"
    assert cross_entropy().positions(DATA) == list(range(N_POS - 1))  # the last position is not scored
    with pytest.raises(ValueError):
        Metric("bad", cross_entropy().fn, reads="some")


@pytest.mark.requires_hooked
@pytest.mark.parametrize("metric", ["cross_entropy", "accuracy", "kl", "target_logit"])
def test_evaluate_same_with_and_without_pruning(metric):
    """The scored-only metric (the engine prunes) and the same function declared to read every
    position (the engine computes everything) give the same numbers; one scored position makes
    the pruning real."""
    model = model_for(MODEL_MLP)
    mask = torch.zeros_like(DATA.loss_mask)
    mask[:, 2] = True
    data = scrub.Dataset(tokens=DATA.tokens, targets=DATA.targets, loss_mask=mask, name="one scored position")
    pruned = scrub.metrics.resolve(metric)
    unpruned = Metric(pruned.name, pruned.fn, pruned.lower_is_better, pruned.needs_clean, reads="all")
    h = with_mlp(model.cfg)
    a = scrub.evaluate(h, model, data, seeds=2, metric=pruned, n_boot=20)
    b = scrub.evaluate(h, model, data, seeds=2, metric=unpruned, n_boot=20)
    # loss recovered divides by M_base - M_model, small on a random model: float noise of 1e-6
    # in the metrics moves it by ~1e-4
    for field, tol in (("m_scrub", 1e-5), ("m_base", 1e-5), ("m_model", 1e-5), ("loss_recovered", 1e-3)):
        assert _same(getattr(a, field), getattr(b, field), tol), field
    assert not math.isnan(a.m_scrub)
    r = scrub.evaluate(h, model, data, seeds=2, metric=pruned, n_boot=20, engine="reference")
    assert _same(a.m_scrub, r.m_scrub) and _same(a.loss_recovered, r.loss_recovered, 1e-3)


def _same(x: float, y: float, tol: float = 1e-5) -> bool:
    """Equal within ``tol``; NaN equals NaN and an infinity itself (accuracy on a random model can
    leave loss recovered undefined, and then both runs must say so)."""
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y or abs(x - y) < tol


@pytest.mark.requires_hooked
def test_callable_metric_sees_every_position():
    model = model_for(MODEL_ATTN)
    seen = []

    def last_logit(logits, batch):
        seen.append(bool(torch.isnan(logits).any()))
        return logits[:, -1, 0]  # reads the unscored last position

    r = scrub.evaluate(induction_like(model.cfg), model, DATA, metric=last_logit, n_boot=10)
    assert seen and not any(seen)
    assert r.loss_recovered == r.loss_recovered  # a number, not NaN


@pytest.mark.requires_hooked
def test_pruned_results_do_not_depend_on_chunk_size():
    model = model_for(MODEL_MLP)
    view = ModelView.from_hooked(model)
    schedules = [scrub.plan(h, DATA, 5, model=model) for h in (with_mlp(model.cfg), induction_like(model.cfg))]
    big = BatchedEngine(view, DATA, memory_budget_mb=4096)
    tiny = BatchedEngine(view, DATA, memory_budget_mb=1e-9)
    assert tiny.chunk_size(schedules, [3]) == 1 and big.chunk_size(schedules, [3]) == N_ROWS
    for g, w in zip(tiny.run_many(schedules, positions=[3]), big.run_many(schedules, positions=[3])):
        assert max_diff(g, w) < 1e-5
    assert max_diff(tiny.clean_logits(torch.arange(N_ROWS), [0, 3]), big.clean_logits(torch.arange(N_ROWS))[:, [0, 3]]) < 1e-5
