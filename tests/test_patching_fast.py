"""The one-position fast path of activation patching (`scrub.patching.forward.resume_at`: packed
tokens from each cell's own position on, the first layer's queries, keys and values only at the
patched position, heads-major attention) equals the general path (`resume`, through
`head_block`), on a model of every branch: learned and shortformer positions, rotary, grouped-
and multi-query attention, a sliding window, parallel blocks, wide heads, soft caps and
post-norms, attention-only. And parallel blocks, which the general path now handles too,
against HuggingFace hooks (an oracle independent of the model view)."""

from __future__ import annotations

import pytest
import torch

from scrub.metrics import resolve
from scrub.patching import activation as act_module
from scrub.patching import activation_patch
from scrub.patching import forward as forward_module
from conftest import make_model, random_dataset
from families import VOCAB, make_hf_model

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ["heads", "q", "resid", "mlp"]  # the cells the fast path takes (by position)


def fast_and_slow(monkeypatch, model, data, corrupt, kinds, **kw):
    """The same sweep through the fast path and through the general one; checks each path was
    taken (`resume_at` called, or not)."""
    calls = []
    real = forward_module.resume_at

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(act_module, "resume_at", spy)
    fast = activation_patch(model, data, kinds, corrupt=corrupt, positions="each", **kw)
    assert calls, "the fast path was not taken"
    monkeypatch.setattr(act_module, "FAST", False)
    calls.clear()
    slow = activation_patch(model, data, kinds, corrupt=corrupt, positions="each", **kw)
    assert not calls
    assert fast.sites == slow.sites
    return fast, slow


def assert_same(fast, slow):
    torch.testing.assert_close(fast.patched, slow.patched, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.effect, slow.effect, rtol=1e-4, atol=1e-4)


@pytest.mark.requires_hooked
@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(positional_embedding_type="shortformer"), dict(attn_only=True), dict(normalization_type="LNPre")],
    ids=["learned", "shortformer", "attn-only", "LNPre"],
)
def test_fast_path_equals_the_general_path_on_hooked_models(monkeypatch, overrides):
    model = make_model(seed=3, **overrides)
    data = random_dataset(n=5, seed=11)
    corrupt = random_dataset(n=5, seed=12).tokens
    kinds = [k for k in KINDS if not (overrides.get("attn_only") and k == "mlp")]
    for direction, metric in (("denoise", "target_logit"), ("noise", "cross_entropy")):
        fast, slow = fast_and_slow(monkeypatch, model, data, corrupt, kinds, direction=direction, metric=metric)
        monkeypatch.setattr(act_module, "FAST", True)
        assert_same(fast, slow)


@pytest.mark.parametrize(
    "family", ["gpt2", "gpt_neox", "gptj", "llama", "mistral", "qwen2", "gemma", "gemma_wide_heads", "gemma2"]
)
def test_fast_path_equals_the_general_path_on_every_family(monkeypatch, family):
    """Rotary (full, partial, GPT-J pairing), GQA / MQA, a sliding window shorter than the rows,
    parallel blocks, heads wider than the small-head attention kernel takes, soft caps."""
    model = make_hf_model(family, seed=5)
    data = random_dataset(n=3, pos=7, vocab=VOCAB, seed=21)
    corrupt = random_dataset(n=3, pos=7, vocab=VOCAB, seed=22).tokens
    fast, slow = fast_and_slow(monkeypatch, model, data, corrupt, KINDS, metric="target_logit")
    assert_same(fast, slow)


def test_small_token_budget_splits_calls_without_changing_numbers(monkeypatch):
    """Calls that hold cells of many positions (a big budget) or one cell each (budget 1)."""
    model = make_hf_model("llama", seed=6)
    data = random_dataset(n=4, pos=8, vocab=VOCAB, seed=23)
    corrupt = random_dataset(n=4, pos=8, vocab=VOCAB, seed=24).tokens
    monkeypatch.setattr(act_module, "TOKENS", 1)
    one = activation_patch(model, data, ["heads", "resid"], corrupt=corrupt, positions="each")
    monkeypatch.setattr(act_module, "TOKENS", 10**6)
    many = activation_patch(model, data, ["heads", "resid"], corrupt=corrupt, positions="each")
    torch.testing.assert_close(one.patched, many.patched, rtol=1e-5, atol=1e-6)


# ---- parallel blocks against HuggingFace hooks (no model view in the oracle)


def _hf_patched(model, base_tokens, source_tokens, layer, position, head=None):
    """HF logits of ``base_tokens`` with, at ``position``, layer ``layer``'s input (``head`` None)
    or head ``head``'s input to the attention output projection taken from ``source_tokens``."""
    attn = model.gpt_neox.layers[layer].attention
    e = model.config.hidden_size // model.config.num_attention_heads
    store = {}
    if head is None:
        def pre(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if "save" in store:
                store["value"] = hidden[:, position].clone()
                return None
            hidden = hidden.clone()
            hidden[:, position] = store["value"]
            return ((hidden,) + tuple(args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

        handle = model.gpt_neox.layers[layer].register_forward_pre_hook(pre, with_kwargs=True)
    else:
        cols = slice(head * e, (head + 1) * e)

        def pre(module, args, kwargs):
            x = args[0]
            if "save" in store:
                store["value"] = x[:, position, cols].clone()
                return None
            x = x.clone()
            x[:, position, cols] = store["value"]
            return (x,) + tuple(args[1:]), kwargs

        handle = attn.dense.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            store["save"] = True
            model(source_tokens)
            del store["save"]
            return model(base_tokens).logits
    finally:
        handle.remove()


def test_parallel_blocks_match_huggingface_hooks(monkeypatch):
    """GPT-NeoX with parallel attention and MLP: the MLP reads the layer's input, not the heads'
    output, so a head's patch reaches the next layer unchanged. Both paths against hooks."""
    model = make_hf_model("gpt_neox", seed=7)
    assert model.config.use_parallel_residual
    data = random_dataset(n=4, pos=6, vocab=VOCAB, seed=25)
    corrupt = random_dataset(n=4, pos=6, vocab=VOCAB, seed=26).tokens
    metric = resolve("target_logit")
    for fast_path in (True, False):
        monkeypatch.setattr(act_module, "FAST", fast_path)
        result = activation_patch(model, data, ["heads", "resid"], corrupt=corrupt, positions=[1, 4], metric=metric)
        for site, value in zip(result.sites, result.patched.tolist()):
            head = site.head if site.kind == "head" else None
            logits = _hf_patched(model, corrupt, data.tokens, site.layer, site.position, head)
            want = float(metric(logits, data, None).mean())
            assert value == pytest.approx(want, rel=1e-4, abs=1e-5), (fast_path, site)
