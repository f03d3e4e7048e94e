"""The reference engine against identities of the method and against hand-computed schedules.

Hand checks recompute the scrubbed logits from the model's weights (LayerNorm, attention, MLP and
unembedding written out here) and clean activations from ``run_with_cache``, following the residual
decomposition of DESIGN.md section 1, and compare with `ReferenceEngine.run`.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import scrub
from scrub import EXACT, MLP, Dataset, Embed, Feature, Head, Hypothesis, PosEmbed, ScheduleError, plan
from scrub.engine import ReferenceEngine

from conftest import copy_model, full_exact, random_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-4


def labelled(model, data: Dataset) -> Dataset:
    """``data`` with the model's own top prediction as every target: the model is good at this task."""
    with torch.no_grad():
        targets = model(data.tokens).argmax(-1)
    extras = {"wrong_target": (targets + 1) % model.cfg.d_vocab}
    return Dataset(tokens=data.tokens, targets=targets, loss_mask=data.loss_mask, name="self-labelled", extras=extras)


@pytest.fixture(scope="module")
def task(any_model, data):
    return any_model, labelled(any_model, data)


def first_parity() -> Feature:
    return Feature("first_parity", lambda d: d.tokens[:, 0] % 2)


def token_parity() -> Feature:
    return Feature("token_parity", lambda d: d.tokens % 2)


def root_alone() -> Hypothesis:
    h = Hypothesis("root alone")
    h.output()
    return h


def resampling_hypothesis() -> Hypothesis:
    """A hypothesis whose result depends on the draws (so seeds matter)."""
    h = Hypothesis("resampled")
    out = h.output()
    a = h.claim(Head(1, 0), first_parity(), into=out)
    h.claim(Embed(), token_parity(), into=(a, "q"))
    h.claim(Head(0, 1), EXACT, into=(a, "k"))
    h.claim(Embed(), EXACT, into=out)
    h.claim(Head(1, 1), token_parity(), into=out)
    return h


def run(model, data, h, seed=0, reference=None):
    return ReferenceEngine(model, data).run(plan(h, data, seed, reference=reference))


# ---- identities ---------------------------------------------------------------------------------


def test_full_exact_recovers_everything(task):
    model, data = task
    h = full_exact(model)
    r = scrub.evaluate(h, model, data, engine="reference", seeds=2, n_boot=50)
    assert r.m_base - r.m_model > 0.05, "the task must leave room to recover"
    assert r.loss_recovered == pytest.approx(1.0, abs=ATOL)
    assert r.m_scrub == pytest.approx(r.m_model, abs=1e-5)
    assert torch.allclose(r.rows.scrub, r.rows.model.expand_as(r.rows.scrub), atol=1e-5)
    assert r.engine == "reference" and r.n_rows == len(data) and r.seeds == (0, 1)
    # and the logits themselves
    with torch.no_grad():
        clean = model(data.tokens)
    assert torch.allclose(run(model, data, h, seed=3), clean, atol=ATOL)


def test_root_alone_is_the_baseline(task):
    model, data = task
    r = scrub.evaluate(root_alone(), model, data, engine="reference", seeds=2, n_boot=50)
    assert r.loss_recovered == 0.0
    assert r.m_scrub == r.m_base
    assert torch.equal(r.rows.scrub, r.rows.base)
    # its logits are the model's on the other datum, scored with the reference's labels
    s = plan(root_alone(), data, seed=0)
    with torch.no_grad():
        expected = model(data.tokens[s.root.other])
    assert torch.allclose(ReferenceEngine(model, data).run(s), expected, atol=1e-6)


def test_a_dead_head_costs_nothing(any_model, data):
    dead = Head(1, 1)
    model = copy_model(any_model)
    with torch.no_grad():
        model.blocks[dead.layer].attn.W_O[dead.head] = 0.0  # (model.W_O is a stacked copy)
    assert (model.W_O[dead.layer, dead.head] == 0).all() and (any_model.W_O[dead.layer, dead.head] != 0).any()
    task = labelled(model, data)
    without = full_exact(model, skip={dead})
    r = scrub.evaluate(without, model, task, engine="reference", seeds=2, n_boot=50)
    assert r.loss_recovered == pytest.approx(1.0, abs=ATOL)
    # the same claim removed from the live model does cost something
    live = labelled(any_model, data)
    r_live = scrub.evaluate(full_exact(any_model, skip={dead}), any_model, live, engine="reference", seeds=2, n_boot=50)
    assert r_live.loss_recovered < 0.99


def test_position_embedding_is_input_independent(task):
    """PosEmbed is the same for every input, so leaving it out of the full hypothesis costs nothing."""
    model, data = task
    r = scrub.evaluate(full_exact(model, skip={PosEmbed()}), model, data, engine="reference", n_boot=50)
    assert r.loss_recovered == pytest.approx(1.0, abs=ATOL)


def test_leave_one_out_differs(task):
    model, data = task
    h = full_exact(model)
    loo = h.without(h.find(Head(0, 0)))
    r, r_loo = (scrub.evaluate(x, model, data, engine="reference", n_boot=50) for x in (h, loo))
    assert abs(r.loss_recovered - r_loo.loss_recovered) > 1e-3
    assert not torch.allclose(r.rows.scrub, r_loo.rows.scrub)
    assert r.m_base == r_loo.m_base, "the same seed gives the same baseline"


def test_seeds_reproduce_bit_for_bit(task):
    model, data = task
    h = resampling_hypothesis()
    a = scrub.evaluate(h, model, data, engine="reference", seeds=[4, 5], n_boot=50)
    b = scrub.evaluate(h, model, data, engine="reference", seeds=[4, 5], n_boot=50)
    assert a.to_dict() == b.to_dict()
    assert torch.equal(a.rows.scrub, b.rows.scrub) and torch.equal(a.rows.base, b.rows.base)
    c = scrub.evaluate(h, model, data, engine="reference", seeds=[6, 7], n_boot=50)
    assert c.m_scrub != a.m_scrub and c.loss_recovered != a.loss_recovered
    assert not torch.equal(a.rows.scrub, c.rows.scrub)
    # seeds=k means seeds 0..k-1; each seed's rows are those of a run with that seed alone
    d = scrub.evaluate(h, model, data, engine="reference", seeds=2, n_boot=50)
    e = scrub.evaluate(h, model, data, engine="reference", seeds=[1], n_boot=50)
    assert d.seeds == (0, 1)
    assert torch.equal(d.rows.scrub[1], e.rows.scrub[0])
    assert d.lr_per_seed[1] == pytest.approx(e.loss_recovered, abs=1e-12)


def test_batch_size_chunking_changes_nothing(task):
    model, data = task
    h = resampling_hypothesis()
    whole = scrub.evaluate(h, model, data, engine="reference", seeds=2, n_boot=50)
    chunked = scrub.evaluate(h, model, data, engine="reference", seeds=2, n_boot=50, batch_size=7)
    for a, b in ((whole.rows.scrub, chunked.rows.scrub), (whole.rows.base, chunked.rows.base),
                 (whole.rows.model, chunked.rows.model)):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
    assert chunked.loss_recovered == pytest.approx(whole.loss_recovered, abs=1e-4)


def test_n_limits_the_reference_rows(task):
    model, data = task
    h = resampling_hypothesis()
    r = scrub.evaluate(h, model, data, engine="reference", n=10, n_boot=50)
    assert r.n_rows == 10 and torch.equal(r.rows.reference, torch.arange(10))
    assert r.rows.scrub.shape == (1, 10)


def test_accuracy_metric(task):
    model, data = task
    r = scrub.evaluate(full_exact(model), model, data, engine="reference", metric="accuracy", n_boot=50)
    assert not r.lower_is_better and r.metric == "accuracy"
    assert r.m_model == pytest.approx(1.0)  # the targets are the model's own argmax
    assert r.m_base < 0.9
    assert r.m_scrub == pytest.approx(1.0) and r.loss_recovered == pytest.approx(1.0)
    loo = scrub.evaluate(resampling_hypothesis(), model, data, engine="reference", metric="accuracy", n_boot=50)
    assert loo.m_base <= loo.m_model
    # accuracy is the fraction of scored positions where the argmax hits
    s = plan(resampling_hypothesis(), data, 0)
    logits = ReferenceEngine(model, data).run(s)
    hits = (logits.argmax(-1) == data.targets)[:, :-1].double().mean(1)
    assert loo.m_scrub == pytest.approx(float(hits.mean()), abs=1e-6)


def test_kl_metric(task):
    model, data = task
    r = scrub.evaluate(full_exact(model), model, data, engine="reference", metric="kl", n_boot=50)
    assert r.metric == "kl_to_model" and r.lower_is_better
    assert r.m_model == 0.0
    assert abs(r.m_scrub) < 1e-6
    assert r.m_base > 1e-3
    assert r.loss_recovered == pytest.approx(1.0, abs=ATOL)
    # the baseline's KL by hand
    s = plan(root_alone(), data, seed=0)
    with torch.no_grad():
        p = model(data.tokens).log_softmax(-1)
        q = model(data.tokens[s.root.other]).log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1)[:, :-1].double().mean(1)
    assert r.m_base == pytest.approx(float(kl.mean()), rel=1e-5)


def test_logit_diff_metric(task):
    model, data = task
    r = scrub.evaluate(full_exact(model), model, data, engine="reference", metric="logit_diff", n_boot=50)
    assert not r.lower_is_better and r.m_model > r.m_base
    assert r.loss_recovered == pytest.approx(1.0, abs=ATOL)


def test_user_callable_metric(task):
    model, data = task

    def mean_logit_of_target(logits, batch):
        return -logits.gather(-1, batch.targets[..., None])[..., 0][:, :-1].mean(1)

    r = scrub.evaluate(root_alone(), model, data, engine="reference", metric=mean_logit_of_target, n_boot=50)
    assert r.metric == "mean_logit_of_target" and r.lower_is_better
    with torch.no_grad():
        clean = model(data.tokens)
        other = model(data.tokens[plan(root_alone(), data, 0).root.other])
    assert r.m_model == pytest.approx(float(mean_logit_of_target(clean, data).double().mean()), rel=1e-5)
    assert r.m_scrub == pytest.approx(float(mean_logit_of_target(other, data).double().mean()), rel=1e-5)


def test_engine_refuses_a_schedule_of_another_dataset(attn_model, data):
    s = plan(root_alone(), random_dataset(n=8), seed=0)
    with pytest.raises(ScheduleError, match="planned on dataset"):
        ReferenceEngine(attn_model, data).run(s)


def test_engine_restores_the_model(any_model, data):
    cfg = any_model.cfg
    before = (cfg.use_split_qkv_input, cfg.use_attn_result, cfg.use_hook_mlp_in, cfg.use_attn_in)
    with torch.no_grad():
        clean = any_model(data.tokens)
    run(any_model, data, resampling_hypothesis())
    assert (cfg.use_split_qkv_input, cfg.use_attn_result, cfg.use_hook_mlp_in, cfg.use_attn_in) == before
    assert all(not hp.fwd_hooks for hp in any_model.hook_dict.values()), "no hook may be left behind"
    with torch.no_grad():
        assert torch.equal(any_model(data.tokens), clean)


# ---- hand-computed schedules ------------------------------------------------------------------


class Manual:
    """The model written out from its weights (TransformerLens conventions), plus clean caches."""

    def __init__(self, model, data: Dataset) -> None:
        self.model, self.data, self.cfg = model, data, model.cfg

    def ln(self, x, w, b):
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + self.cfg.eps).sqrt() * w + b

    def head(self, layer, h, q_in, k_in, v_in):
        """Head ``layer.h`` on port inputs (pre-LayerNorm residual streams) ``[n, pos, d]``."""
        m = self.model
        ln = m.blocks[layer].ln1
        q = self.ln(q_in, ln.w, ln.b) @ m.W_Q[layer, h] + m.b_Q[layer, h]  # [n, pos, d_head]
        k = self.ln(k_in, ln.w, ln.b) @ m.W_K[layer, h] + m.b_K[layer, h]
        v = self.ln(v_in, ln.w, ln.b) @ m.W_V[layer, h] + m.b_V[layer, h]
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.cfg.d_head)  # [n, query, key]
        n_pos = q.shape[1]
        future = torch.triu(torch.ones(n_pos, n_pos, dtype=torch.bool), diagonal=1)
        pattern = scores.masked_fill(future, float("-inf")).softmax(-1)
        return (pattern @ v) @ m.W_O[layer, h]  # [n, pos, d_model], without b_O

    def mlp(self, layer, x):
        m = self.model
        ln = m.blocks[layer].ln2
        hidden = F.gelu(self.ln(x, ln.w, ln.b) @ m.W_in[layer] + m.b_in[layer])
        return hidden @ m.W_out[layer] + m.b_out[layer]

    def unembed(self, resid):
        ln = self.model.ln_final
        return self.ln(resid, ln.w, ln.b) @ self.model.W_U + self.model.b_U

    def cache(self, rows):
        """Clean activations on ``rows``: residual streams, and each component's output."""
        _, cache = self.model.run_with_cache(self.data.tokens[rows])
        L = self.cfg.n_layers
        out = {"embed": self.model.W_E[self.data.tokens[rows]], "final": cache[f"blocks.{L - 1}.hook_resid_post"]}
        for layer in range(L):
            out[f"pre{layer}"] = cache[f"blocks.{layer}.hook_resid_pre"]
            z = cache[f"blocks.{layer}.attn.hook_z"]  # [n, pos, heads, d_head]
            for h in range(self.cfg.n_heads):
                out[f"head{layer}{h}"] = z[:, :, h] @ self.model.W_O[layer, h]
            if not self.cfg.attn_only:
                out[f"mid{layer}"] = cache[f"blocks.{layer}.hook_resid_mid"]
                out[f"mlp{layer}"] = cache[f"blocks.{layer}.hook_mlp_out"]
        return out


@pytest.fixture(scope="module")
def manual(any_model, data):
    m = Manual(any_model, data)
    # the hand-written model must reproduce the clean forward pass before it can check anything
    rows = torch.arange(6)
    with torch.no_grad():
        c = m.cache(rows)
        for layer in range(any_model.cfg.n_layers):
            for h in range(any_model.cfg.n_heads):
                pre = c[f"pre{layer}"]
                assert torch.allclose(m.head(layer, h, pre, pre, pre), c[f"head{layer}{h}"], atol=1e-5)
            if not any_model.cfg.attn_only:
                assert torch.allclose(m.mlp(layer, c[f"mid{layer}"]), c[f"mlp{layer}"], atol=1e-5)
        assert torch.allclose(m.unembed(c["final"]), any_model(data.tokens[rows]), atol=1e-5)
    return m


@torch.no_grad()
def test_hand_computed_head_with_scrubbed_q_and_k(any_model, data, manual):
    """output <- Head(1,0) [EXACT] <-q- Embed [token parity, per position]; <-k- Head(0,1) [first-token parity]."""
    h = Hypothesis("hand A")
    out = h.output()
    a = h.claim(Head(1, 0), EXACT, into=out)
    h.claim(Embed(), token_parity(), into=(a, "q"))
    h.claim(Head(0, 1), first_parity(), into=(a, "k"))
    s = plan(h, data, seed=1)
    got = ReferenceEngine(any_model, data).run(s)

    (na,) = s.root.children
    ne, nk = na.children
    o0, o1 = manual.cache(s.root.other), manual.cache(na.other)
    cols = torch.arange(data.n_pos)
    embed_scrubbed = any_model.W_E[data.tokens[ne.datum, cols]]  # position t from the row drawn for t
    head01_scrubbed = manual.cache(nk.datum)["head01"]
    q_in = o1["pre1"] - o1["embed"] + embed_scrubbed
    k_in = o1["pre1"] - o1["head01"] + head01_scrubbed
    v_in = o1["pre1"]
    head10 = manual.head(1, 0, q_in, k_in, v_in)
    expected = manual.unembed(o0["final"] - o0["head10"] + head10)
    assert torch.allclose(got, expected, atol=ATOL)
    # the scrub really changed something (the test would be vacuous otherwise)
    assert not torch.allclose(head10, manual.head(1, 0, o1["pre1"], o1["pre1"], o1["pre1"]), atol=1e-3)
    assert not torch.allclose(expected, any_model(data.tokens), atol=1e-2)

    # and evaluate() scores exactly these logits
    r = scrub.evaluate(h, any_model, data, engine="reference", seeds=[1], n_boot=10)
    ce = -expected.log_softmax(-1).gather(-1, data.targets.clamp(min=0)[..., None])[..., 0][:, :-1].double().mean(1)
    assert r.m_scrub == pytest.approx(float(ce.mean()), abs=1e-5)


@torch.no_grad()
def test_hand_computed_position_restricted_and_per_position_leaves(any_model, data, manual):
    """output <- Head(1,1) [EXACT] @pos[3, 5]; <- Embed [token parity, per position] (every position)."""
    h = Hypothesis("hand B")
    out = h.output()
    h.claim(Head(1, 1), EXACT, into=out, positions=[3, 5])
    h.claim(Embed(), token_parity(), into=out)
    s = plan(h, data, seed=2)
    got = ReferenceEngine(any_model, data).run(s)

    nh, ne = s.root.children
    o0, ref = manual.cache(s.root.other), manual.cache(s.reference)
    mask = torch.zeros(data.n_pos, 1)
    mask[[3, 5]] = 1.0
    embed_scrubbed = any_model.W_E[data.tokens[ne.datum, torch.arange(data.n_pos)]]
    resid = o0["final"] + mask * (ref["head11"] - o0["head11"]) + (embed_scrubbed - o0["embed"])
    assert torch.allclose(got, manual.unembed(resid), atol=ATOL)


@torch.no_grad()
def test_hand_computed_per_position_node_with_children(any_model, data, manual):
    """output <- Head(1,0) [token, per position: one copy per position] <-v- Embed [EXACT]."""
    h = Hypothesis("hand C")
    out = h.output()
    a = h.claim(Head(1, 0), Feature.token(), into=out)
    h.claim(Embed(), EXACT, into=(a, "v"))
    s = plan(h, data, seed=3)
    got = ReferenceEngine(any_model, data).run(s)

    (na,) = s.root.children
    o0 = manual.cache(s.root.other)
    head10 = torch.zeros_like(o0["head10"])
    for t, copy in na.copies.items():
        ot = manual.cache(copy.other)
        (ne,) = copy.children
        v_in = ot["pre1"] - ot["embed"] + any_model.W_E[data.tokens[ne.datum]]
        head10[:, t] = manual.head(1, 0, ot["pre1"], ot["pre1"], v_in)[:, t]
    expected = manual.unembed(o0["final"] - o0["head10"] + head10)
    assert torch.allclose(got, expected, atol=ATOL)


@torch.no_grad()
def test_hand_computed_mlp_chain(mlp_model, data):
    """output <- MLP(1) [EXACT] <- Head(1,2) [first parity]; <- MLP(0) [EXACT] <- Embed [any]."""
    manual = Manual(mlp_model, data)
    h = Hypothesis("hand D")
    out = h.output()
    m1 = h.claim(MLP(1), EXACT, into=out)
    h.claim(Head(1, 2), first_parity(), into=m1)
    m0 = h.claim(MLP(0), EXACT, into=m1)
    h.claim(Embed(), Feature.any(), into=m0)
    s = plan(h, data, seed=4)
    got = ReferenceEngine(mlp_model, data).run(s)

    (n1,) = s.root.children
    nh, n0 = n1.children
    (ne,) = n0.children
    o0, o1, o2 = manual.cache(s.root.other), manual.cache(n1.other), manual.cache(n0.other)
    mlp0 = manual.mlp(0, o2["mid0"] - o2["embed"] + mlp_model.W_E[data.tokens[ne.datum]])
    mlp1_in = o1["mid1"] - o1["head12"] + manual.cache(nh.datum)["head12"] - o1["mlp0"] + mlp0
    mlp1 = manual.mlp(1, mlp1_in)
    expected = manual.unembed(o0["final"] - o0["mlp1"] + mlp1)
    assert torch.allclose(got, expected, atol=ATOL)
