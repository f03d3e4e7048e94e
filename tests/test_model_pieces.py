"""Each architecture piece of the model view against the HuggingFace function it reproduces."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scrub.model.attention import attention_mask, soft_cap
from scrub.model.config import ViewConfig
from scrub.model.norms import normalise
from scrub.model.rotary import inverse_frequencies, rotate

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True, database=None)
DTYPES = [torch.float32, torch.bfloat16]


@SETTINGS
@given(half=st.integers(1, 4), extra=st.sampled_from([0, 2, 4]), n_pos=st.integers(1, 9),
       base=st.sampled_from([100.0, 10000.0]), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 999))
def test_neox_rotary_equals_hf(half, extra, n_pos, base, dtype, seed):
    from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

    r = 2 * half
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, n_pos, r + extra, generator=g).to(dtype)
    pos = torch.randperm(12, generator=g)[:n_pos]
    freqs = pos[None, :, None].float() * inverse_frequencies(r, base)
    emb = torch.cat((freqs, freqs), dim=-1)
    want, _ = apply_rotary_pos_emb(q, q, emb.cos().to(dtype), emb.sin().to(dtype))
    torch.testing.assert_close(rotate(q, pos, r, base, "neox"), want, atol=0, rtol=0)


@SETTINGS
@given(half=st.integers(1, 4), extra=st.sampled_from([0, 2, 4]), n_pos=st.integers(1, 9),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 999))
def test_gptj_rotary_equals_hf(half, extra, n_pos, dtype, seed):
    from transformers.models.gptj import modeling_gptj as gptj

    r = 2 * half
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n_pos, 3, r + extra, generator=g).to(dtype)  # GPT-J's layout [b, p, h, e]
    pos = torch.randperm(12, generator=g)[:n_pos]
    sincos = gptj.create_sinusoidal_positions(12, r)[pos[None]].to(dtype)
    sin, cos = torch.split(sincos, r // 2, dim=-1)
    want = torch.cat([gptj.apply_rotary_pos_emb(x[..., :r], sin, cos), x[..., r:]], dim=-1)
    got = rotate(x.transpose(1, 2), pos, r, 10000.0, "gptj").transpose(1, 2)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["rms", "rms_1p", "layernorm"])
def test_norms_equal_hf(kind, dtype):
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    g = torch.Generator().manual_seed(0)
    module = {"rms": LlamaRMSNorm(16, eps=1e-5), "rms_1p": GemmaRMSNorm(16, eps=1e-5),
              "layernorm": torch.nn.LayerNorm(16, eps=1e-5)}[kind].to(dtype)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g).to(dtype))
    x = (3 * torch.randn(4, 5, 16, generator=g)).to(dtype)
    bias = getattr(module, "bias", None)
    got = normalise(kind, x, module.weight.detach(), None if bias is None else bias.detach(), 1e-5)
    torch.testing.assert_close(got, module(x).detach(), atol=0, rtol=0)


def _config(window):
    return ViewConfig(n_layers=1, n_heads=1, d_model=4, d_head=4, d_mlp=None, d_vocab=3, d_vocab_out=3, n_ctx=8,
                      attn_only=True, positional="standard", causal=True, normalization=None, act_fn=None,
                      eps=1e-5, attn_scale=2.0, layer_attn_scales=(2.0,), sliding_windows=(window,))


@pytest.mark.parametrize("window", [None, 1, 3, 8])
def test_sliding_window_mask_equals_hf(window):
    from transformers.masking_utils import causal_mask_function, sliding_window_overlay

    q = torch.arange(8)
    got = attention_mask(_config(window), 0, q, 8)
    want = torch.tensor([[bool(causal_mask_function(0, 0, i, j)) and (window is None or bool(sliding_window_overlay(window)(0, 0, i, j)))
                          for j in range(8)] for i in range(8)])
    assert torch.equal(got, want)


def test_soft_cap():
    x = torch.linspace(-100, 100, 11)
    assert torch.equal(soft_cap(x, None), x)
    capped = soft_cap(x, 5.0)
    assert capped.abs().max() <= 5.0 and torch.allclose(soft_cap(torch.tensor([0.01]), 5.0), torch.tensor([0.01]), atol=1e-6)
