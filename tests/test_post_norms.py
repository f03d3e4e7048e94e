"""Scrubbing a post-norm model (Gemma-2) exactly: docs/post-norms.md, checked by hand from HF hooks.

Gemma-2's attention adds ``N(sum_h o_h + b_O)`` to the residual stream. A tree node whose port is
fed by some heads of layer ``l`` reads ``resid(other) - N(S_l(other)) + N(S')``, where ``S'`` sums
the claimed heads' scrubbed outputs, the other heads' outputs on ``other`` and ``b_O``, per row
and position. Here the expected logits are built by hand from PyTorch hooks on the HuggingFace
modules (the heads' slices of ``o_proj``'s input, ``post_attention_layernorm``, the final norm's
input), with neither engine's code, and compared with both engines:

(a) one head of a layer claimed (the others from "other"), and two heads of one layer, one of
    them on an edge restricted to some positions (it mixes in only there);
(b) the traps: ``N(clean sum) + (o'_h - o_h)`` and a per-head ``N(o_h)`` give different numbers
    on this model, so a test that passes cannot be using them;
(c) bfloat16: both engines run in bfloat16 and `scrub.evaluate` scores in float32; the
    identities hold (every writer EXACT: 100%; the output alone: 0%).

Plus the report's compensation check (knock-outs and direct effects re-normalise too), and the
refusal that remains: TransformerLens post-norm models in the reference engine.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

import scrub
from scrub import EXACT, Feature, Head, Hypothesis, plan
from scrub.engine import BatchedEngine, ReferenceEngine
from scrub.errors import UnsupportedModelError

from conftest import random_dataset
from families import hf_writers, make_hf_model

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = random_dataset(n=16, pos=8, vocab=50, seed=21, name="post-norms")
REFERENCE = torch.arange(5)
LAYER = 1


@lru_cache(maxsize=None)
def model_of(dtype: torch.dtype = torch.float32):
    # attention_bias: b_O is not zero, so a formula that drops or doubles it is caught
    return make_hf_model("gemma2", seed=5, dtype=dtype, attention_bias=True)


@lru_cache(maxsize=None)
def engines(dtype: torch.dtype = torch.float32) -> tuple[BatchedEngine, ReferenceEngine]:
    model = model_of(dtype)
    return BatchedEngine(model, DATA), ReferenceEngine(model, DATA)


def o_proj(model):
    """Layer ``LAYER``'s output projection, by the HF module path (not scrub's `hf_modules`)."""
    return model.model.layers[LAYER].self_attn.o_proj


def post_attention_norm(model):
    """Layer ``LAYER``'s post-attention norm ``N``, by the HF module path."""
    return model.model.layers[LAYER].post_attention_layernorm


@torch.no_grad()
def hooked_pass(model, rows: torch.Tensor, final_in: torch.Tensor | None = None) -> dict:
    """One HF forward on ``rows``: every head's output at layer ``LAYER`` (``[n, pos, H, d]``, from
    ``o_proj``'s input and weight), ``o_proj``'s bias, the post-attention norm's input and output,
    the final norm's input, and the logits (with ``final_in`` replacing the final norm's input)."""
    seen: dict = {}
    handles = [
        o_proj(model).register_forward_pre_hook(lambda mod, a: seen.__setitem__("z", a[0])),
        post_attention_norm(model).register_forward_pre_hook(lambda mod, a: seen.__setitem__("sum", a[0])),
        post_attention_norm(model).register_forward_hook(lambda mod, a, v: seen.__setitem__("write", v)),
    ]

    def final(mod, a):
        seen["final"] = a[0]
        return None if final_in is None else (final_in, *a[1:])

    handles.append(model.model.norm.register_forward_pre_hook(final))
    try:
        seen["logits"] = model(input_ids=DATA.tokens[rows]).logits
    finally:
        for h in handles:
            h.remove()
    shape = (model.config.num_attention_heads, model.config.head_dim)
    z = seen["z"].unflatten(-1, shape)  # [n, pos, H, e]
    w = o_proj(model).weight.T.unflatten(0, shape)  # [H, e, d]
    seen["heads"] = torch.einsum("nphe,hed->nphd", z, w)  # [n, pos, H, d]
    seen["bias"] = o_proj(model).bias
    return seen


def logits_with_final_residual(model, rows: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
    """The model's logits when its final norm reads ``resid`` (final norm, unembedding, soft cap)."""
    return hooked_pass(model, rows, final_in=resid)["logits"]


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, atol=2e-5 * max(1.0, float(want.abs().max())), rtol=0)


def _engine_logits(s) -> tuple[torch.Tensor, torch.Tensor]:
    batched, reference = engines()
    return batched.run(s), reference.run(s)


# ---- (a) by hand -------------------------------------------------------------------------------


@torch.no_grad()
def test_one_claimed_head_is_renormalised_with_the_others_from_other():
    """Output <- Head(1, 2) EXACT: the final residual is the model's on ``other`` with layer 1's
    attention write replaced by ``N(o_2(x) + sum_{g != 2} o_g(other) + b_O)``."""
    model = model_of()
    h = Hypothesis("one head")
    h.claim(Head(LAYER, 2), EXACT, into=h.output())
    s = plan(h, DATA, 3, model=model, reference=REFERENCE)
    x, other = s.reference, s.root.other
    assert not torch.equal(x, other)
    on_x, on_other = hooked_pass(model, x), hooked_pass(model, other)
    heads = on_other["heads"].clone()  # [n, pos, H, d]
    heads[:, :, 2] = on_x["heads"][:, :, 2]
    torch.testing.assert_close(on_other["heads"].sum(2) + on_other["bias"], on_other["sum"], atol=1e-5, rtol=0)
    _both_engines_give_the_renormalised_sum(model, s, other, on_other, heads)


def _both_engines_give_the_renormalised_sum(model, s, other, on_other, heads) -> None:
    """Both engines' logits equal the model run on ``other`` with the final residual's attention
    write of the layer replaced by ``N(sum of heads + b_O)`` (``heads [n, pos, H, d]``)."""
    norm = post_attention_norm(model)
    resid = on_other["final"] - on_other["write"] + norm(heads.sum(2) + on_other["bias"])  # [n, pos, d]
    want = logits_with_final_residual(model, other, resid)
    got_batched, got_reference = _engine_logits(s)
    _close(got_batched, want)
    _close(got_reference, want)


@torch.no_grad()
def test_two_heads_of_one_layer_one_restricted_to_positions():
    """Head(1, 0) on a random datum everywhere, Head(1, 3) EXACT at positions {2, 5} only:
    one norm over both replacements where both apply, over Head(1, 0)'s alone elsewhere."""
    model = model_of()
    h = Hypothesis("two heads")
    out = h.output()
    h.claim(Head(LAYER, 0), Feature.any(), into=out)
    h.claim(Head(LAYER, 3), EXACT, into=out, positions={2, 5})
    s = plan(h, DATA, 4, model=model, reference=REFERENCE)
    a = next(n for n in s.nodes() if n.component == Head(LAYER, 0))
    other = s.root.other
    assert not torch.equal(a.datum, other) and not torch.equal(a.datum, s.reference)
    on_a, on_x, on_other = hooked_pass(model, a.datum), hooked_pass(model, s.reference), hooked_pass(model, other)
    heads = on_other["heads"].clone()  # [n, pos, H, d]
    heads[:, :, 0] = on_a["heads"][:, :, 0]
    heads[:, [2, 5], 3] = on_x["heads"][:, [2, 5], 3]
    _both_engines_give_the_renormalised_sum(model, s, other, on_other, heads)


# ---- (b) the traps -----------------------------------------------------------------------------


@torch.no_grad()
def test_the_wrong_formulas_give_other_numbers_on_this_model():
    """``N(clean sum) + (o'_h - o_h)`` and ``N(o'_h) - N(o_h)`` are far from what both engines give
    (which (a) shows to be the re-normalised sum), so neither formula could pass these tests."""
    model = model_of()
    h = Hypothesis("one head")
    h.claim(Head(LAYER, 1), Feature.any(), into=h.output())
    s = plan(h, DATA, 5, model=model, reference=REFERENCE)
    child = s.root.children[0]
    other = s.root.other
    on_child, on_other = hooked_pass(model, child.datum), hooked_pass(model, other)
    norm = post_attention_norm(model)
    new, old = on_child["heads"][:, :, 1], on_other["heads"][:, :, 1]  # [n, pos, d]
    delta_after_norm = on_other["final"] + (new - old)  # N(clean sum) + (o'_h - o_h)
    per_head_norm = on_other["final"] + norm(new) - norm(old)  # per-head N(o_h)
    heads = on_other["heads"].clone()
    heads[:, :, 1] = new
    right = on_other["final"] - on_other["write"] + norm(heads.sum(2) + on_other["bias"])
    want = logits_with_final_residual(model, other, right)
    got_batched, got_reference = _engine_logits(s)
    _close(got_batched, want)
    _close(got_reference, want)
    scale = float(want.abs().max())
    for wrong in (delta_after_norm, per_head_norm):
        wrong_logits = logits_with_final_residual(model, other, wrong)
        assert float((wrong_logits - want).abs().max()) > 0.05 * scale  # thousands of times the tolerance


# ---- (c) bfloat16 and the identities -------------------------------------------------------------


@torch.no_grad()
def test_bfloat16_runs_in_bfloat16_close_to_float32_and_scores_in_float32():
    model16 = model_of(torch.bfloat16)
    h = Hypothesis("two heads and an MLP")
    out = h.output()
    head = h.claim(Head(LAYER, 0), Feature.token(), into=out)
    h.claim(Head(0, 1), Feature.any(), into=(head, "v"))
    h.claim(Head(0, 2), EXACT, into=(head, "v"), positions={1, 3})
    h.claim(scrub.MLP(0), EXACT, into=out)
    s = plan(h, DATA, 6, model=model16, reference=REFERENCE)
    batched, reference = engines(torch.bfloat16)
    got, want = batched.run(s), reference.run(s)
    assert got.dtype == want.dtype == torch.bfloat16
    exact = engines()[1].run(s)  # the same weights in float32 (drawn in float64, rounded)
    scale = float(exact.abs().max())
    err_batched, err_reference = (float((x.float() - exact).abs().max()) for x in (got, want))
    # (tighter than tests/test_families_engine.py: un-normalised head differences miss it here)
    assert err_batched <= 1.5 * err_reference + torch.finfo(torch.bfloat16).eps * scale
    r = scrub.evaluate(h, model16, DATA, seeds=1, metric="kl", n=len(REFERENCE))
    assert r.rows.scrub.dtype in (torch.float32, torch.float64)  # scored in float32, never in bfloat16


def test_identities_on_gemma2_through_evaluate():
    """Every writer EXACT recovers 100% and the output alone 0%, in float32 and in bfloat16."""
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        model = model_of(dtype)
        full = Hypothesis("every writer exact")
        out = full.output()
        for w in hf_writers(model):
            full.claim(w, EXACT, into=out)
        alone = Hypothesis("output alone")
        alone.output()
        r_full, r_alone = scrub.evaluate_many([full, alone], model, DATA, seeds=1, metric="kl", n=8)
        assert r_full.m_base > 0.05
        assert r_full.loss_recovered == pytest.approx(1.0, abs=tol)
        assert r_alone.loss_recovered == pytest.approx(0.0, abs=1e-6)


# ---- what is still refused ---------------------------------------------------------------------


@torch.no_grad()
def test_compensation_knock_outs_and_direct_effects_renormalise():
    """`scrub.reporting.ablation` on Gemma-2, by hand from HF hooks: a knocked-out head reads its
    random row's ``o_proj`` input slice in a full forward (every path), and a head's direct effect
    swaps its output inside layer 1's norm at the final residual only: ``N(S - o_b + o_b') - N(S)``."""
    from scrub.model import ModelView
    from scrub.reporting.ablation import ablated_logits

    model = model_of()
    view = ModelView.from_model(model)
    x, r = REFERENCE, torch.arange(5, 10)
    a, b = Head(LAYER, 0), Head(LAYER, 3)
    random = view.clean_pass(DATA.tokens[r])
    d_head = model.config.head_dim
    cols = slice(a.head * d_head, (a.head + 1) * d_head)
    z_random = hooked_pass(model, r)["z"]

    def knocked(mod, args):
        z = args[0].clone()
        z[..., cols] = z_random[..., cols]
        return (z, *args[1:])

    handle = o_proj(model).register_forward_pre_hook(knocked)
    try:
        want_ko = model(input_ids=DATA.tokens[x]).logits
        on_ko = hooked_pass(model, x)  # the same knocked-out pass, read (the hook above still applies)
    finally:
        handle.remove()
    _close(ablated_logits(view, DATA.tokens[x], random, knock_out=a), want_ko)
    on_x, on_r = hooked_pass(model, x), hooked_pass(model, r)
    norm = post_attention_norm(model)
    for knock_out, base in ((None, on_x), (a, on_ko)):  # direct effect of b, without and with a knocked out
        heads = base["heads"].clone()  # [n, pos, H, d]
        heads[:, :, b.head] = on_r["heads"][:, :, b.head]
        right = base["final"] - base["write"] + norm(heads.sum(2) + base["bias"])
        wrong = base["final"] + on_r["heads"][:, :, b.head] - base["heads"][:, :, b.head]  # un-normalised
        handle = o_proj(model).register_forward_pre_hook(knocked) if knock_out else None
        try:
            want, wrong_logits = (logits_with_final_residual(model, x, resid) for resid in (right, wrong))
        finally:
            if handle is not None:
                handle.remove()
        _close(ablated_logits(view, DATA.tokens[x], random, knock_out=knock_out, direct=b), want)
        assert float((wrong_logits - want).abs().max()) > 0.05 * float(want.abs().max())


def test_a_report_with_its_compensation_check_runs_on_gemma2():
    model = model_of()
    h = Hypothesis("two heads")
    out = h.output()
    h.claim(Head(0, 0), EXACT, into=out)
    h.claim(Head(LAYER, 1), EXACT, into=out)
    rep = scrub.report(h, model, DATA, seeds=1, metric="kl", n=4, n_boot=20)
    assert rep.joint and rep.compensation


@pytest.mark.requires_hooked
def test_a_post_norm_hooked_transformer_is_refused_by_the_reference_engine():
    import transformer_lens

    cfg = transformer_lens.HookedTransformerConfig(
        n_layers=1, d_model=16, n_ctx=8, d_head=4, n_heads=4, d_vocab=50, act_fn="gelu", d_mlp=32,
        normalization_type="RMS", use_normalization_before_and_after=True,
    )
    model = transformer_lens.HookedTransformer(cfg)
    with pytest.raises(UnsupportedModelError, match=r"rule: .*offender: .*post-norms.*fix: pass the HuggingFace model"):
        ReferenceEngine(model, DATA)
