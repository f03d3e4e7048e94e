"""The model view against HuggingFace models of every supported family (random weights, built
offline by `tests.families`): logits, the clean pass's exact decomposition, heads on given port
inputs at chosen query positions, grouped-query k/v per query head, dtypes; and refusals."""

from __future__ import annotations

import functools

import attrs
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from families import FAMILIES, make_hf_model, random_tokens
from scrub.errors import ComponentError, UnsupportedModelError
from scrub.model import ModelView, config_from_model

ATOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.lru_cache(maxsize=None)
def model_and_view(family: str, seed: int = 0):
    model = make_hf_model(family, seed)
    return model, ModelView.from_model(model)


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_logits_equal_hf(family, seed):
    model, view = model_and_view(family, seed)
    tokens = random_tokens(model, n_rows=3, n_pos=10, seed=seed)
    ref = hf_logits(model, tokens)
    assert ref.std() > 0.5  # not saturated: a missing piece would show
    torch.testing.assert_close(view.forward(tokens), ref, atol=ATOL, rtol=0)
    positions = torch.tensor([0, 4, 9])
    torch.testing.assert_close(view.forward(tokens, positions=positions), ref[:, positions], atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_config_from_model_reads_without_copying(family):
    model, view = model_and_view(family)
    assert config_from_model(model) == view.config
    assert view.config.family == model.config.model_type
    assert view.dtype == torch.float32


@pytest.mark.parametrize(
    "family, change",
    [
        ("gpt_neox", dict(rotary_dim=8)),
        ("gpt_neox", dict(parallel_blocks=False)),
        ("gptj", dict(rotary_pairing="neox")),
        ("mistral", dict(sliding_windows=())),
        ("qwen2", dict(sliding_windows=())),
        ("gemma2", dict(attn_softcap=None)),
        ("gemma2", dict(logit_softcap=None)),
        ("gemma2", dict(sliding_windows=())),
        ("gemma", dict(normalization="rms")),
    ],
)
def test_each_piece_matters(family, change):
    """Switching one piece off breaks equality: the test models exercise every piece."""
    model, view = model_and_view(family)
    tokens = random_tokens(model)
    wrong = attrs.evolve(view, config=attrs.evolve(view.config, **change), rotary_inv_freq=None)
    assert (wrong.forward(tokens) - hf_logits(model, tokens)).abs().max() > 1e-2


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "mistral", "qwen2", "gemma"])
def test_sdpa_models(family):
    """Models running torch's scaled_dot_product_attention: the view uses it too, same logits."""
    model = make_hf_model(family, 2, attn_implementation="sdpa")
    view = ModelView.from_model(model)
    assert model.config._attn_implementation == "sdpa" and not view.config.attn_eager
    tokens = random_tokens(model, seed=2)
    torch.testing.assert_close(view.forward(tokens), hf_logits(model, tokens), atol=ATOL, rtol=0)


def hf_hidden_states(model, tokens):
    with torch.no_grad():
        return model(tokens, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("family", FAMILIES)
def test_clean_pass_decomposes_exactly(family):
    model, view = model_and_view(family)
    c = view.config
    tokens = random_tokens(model, seed=3)
    cp = view.clean_pass(tokens)
    hidden = hf_hidden_states(model, tokens)
    torch.testing.assert_close(cp.logits, hf_logits(model, tokens), atol=ATOL, rtol=0)
    torch.testing.assert_close(cp.resid_pre[0], cp.embed + cp.pos, atol=0, rtol=0)
    for layer in range(c.n_layers):
        torch.testing.assert_close(cp.resid_pre[layer], hidden[layer], atol=ATOL, rtol=0)
        heads_sum = cp.head_out[layer].sum(2) + view.attn_bias(layer)
        if c.post_norms:
            torch.testing.assert_close(cp.attn_out[layer], view.attn_write(layer, cp.head_out[layer].sum(2)), atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(cp.attn_out[layer], heads_sum, atol=1e-5, rtol=0)
        if c.parallel_blocks:
            assert cp.resid_mid[layer] is cp.resid_pre[layer]
            after = cp.resid_pre[layer] + cp.attn_out[layer] + cp.mlp_out[layer]
        else:
            torch.testing.assert_close(cp.resid_mid[layer], cp.resid_pre[layer] + cp.attn_out[layer], atol=1e-5, rtol=0)
            after = cp.resid_mid[layer] + cp.mlp_out[layer]
        torch.testing.assert_close(cp.mlp_out[layer], view.mlp(layer, cp.resid_mid[layer]), atol=1e-5, rtol=0)
        nxt = cp.resid_pre[layer + 1] if layer + 1 < c.n_layers else cp.resid_final
        torch.testing.assert_close(nxt, after, atol=1e-5, rtol=0)
    torch.testing.assert_close(cp.logits, view.unembed(cp.resid_final), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_heads_on_port_inputs_at_query_positions(family):
    model, view = model_and_view(family)
    c = view.config
    tokens = random_tokens(model, seed=4)
    cp = view.clean_pass(tokens)
    q_pos = torch.tensor([2, 5, 9])
    keys = torch.arange(tokens.shape[1])
    for layer in range(c.n_layers):
        x = cp.resid_pre[layer]
        all_heads = view.all_heads(layer, x, x, x)
        torch.testing.assert_close(all_heads, cp.head_out[layer], atol=1e-5, rtol=0)
        for head in range(c.n_heads):
            q = view.head_projection(layer, head, "q", x[:, q_pos], q_pos)
            k = view.head_projection(layer, head, "k", x, keys)
            v = view.head_projection(layer, head, "v", x, keys)
            torch.testing.assert_close(q, cp.head_q[layer][:, q_pos, head], atol=1e-5, rtol=0)
            torch.testing.assert_close(k, cp.head_k[layer][:, :, head], atol=1e-5, rtol=0)
            torch.testing.assert_close(v, cp.head_v[layer][:, :, head], atol=1e-5, rtol=0)
            out = view.head_output(layer, head, q, k, v, q_positions=q_pos)
            torch.testing.assert_close(out, cp.head_out[layer][:, q_pos, head], atol=ATOL, rtol=0)
        # several heads at once, one per row, queries at a position set per row
        head_index = torch.arange(tokens.shape[0]) % c.n_heads
        per_row = torch.stack([q_pos, q_pos - 1, q_pos + 0])[: tokens.shape[0]]
        q_in = torch.stack([x[i, per_row[i]] for i in range(tokens.shape[0])])
        got = view.heads(layer, head_index, q_in, x, x, q_positions=per_row)
        want = torch.stack([cp.head_out[layer][i, per_row[i], head_index[i]] for i in range(tokens.shape[0])])
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_rotation_follows_the_given_positions():
    """A query moved to another position is rotated for that position (rotary models)."""
    model, view = model_and_view("llama")
    x = view.clean_pass(random_tokens(model)).resid_pre[1]
    at3 = view.head_projection(1, 0, "q", x[:, [3]], torch.tensor([3]))
    at7 = view.head_projection(1, 0, "q", x[:, [3]], torch.tensor([7]))
    assert (at3 - at7).abs().max() > 1e-3
    v3 = view.head_projection(1, 0, "v", x[:, [3]], torch.tensor([3]))
    torch.testing.assert_close(v3, view.head_projection(1, 0, "v", x[:, [3]], torch.tensor([7])), atol=0, rtol=0)


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma"])
def test_grouped_query_kv_per_query_head(family):
    model, view = model_and_view(family)
    c = view.config
    assert c.n_kv_heads < c.n_heads
    cp = view.clean_pass(random_tokens(model, seed=5))
    keys = torch.arange(cp.embed.shape[1])
    x = cp.resid_pre[1]
    patched = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    for head in range(c.n_heads):
        kv = head // c.kv_group
        same = [h for h in range(c.n_heads) if h // c.kv_group == kv]
        for port, store in (("k", cp.head_k), ("v", cp.head_v)):
            for other in same:
                torch.testing.assert_close(store[1][:, :, head], store[1][:, :, other], atol=0, rtol=0)
            torch.testing.assert_close(view.head_projection(1, head, port, x, keys), store[1][:, :, head], atol=1e-5, rtol=0)
        # patching head h's own key input changes head h only
        got = view.heads(1, torch.full((x.shape[0],), head), x, patched, x)
        assert (got - cp.head_out[1][:, :, head]).abs().max() > 1e-3
        untouched = [h for h in same if h != head]
        for h in untouched:
            torch.testing.assert_close(view.heads(1, torch.full((x.shape[0],), h), x, x, x), cp.head_out[1][:, :, h], atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_models_match_bit_for_bit(family):
    """In bfloat16 the view rounds where the (eager) HuggingFace model rounds: equal logits."""
    model = make_hf_model(family, 0, dtype=torch.bfloat16)
    view = ModelView.from_model(model)
    assert view.dtype == torch.bfloat16
    assert view.rotary_inv_freq is None or view.rotary_inv_freq.dtype == torch.float32
    tokens = random_tokens(model)
    got = view.forward(tokens)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, hf_logits(model, tokens), atol=0, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "gemma2"])
def test_float16_models_keep_their_dtype(family):
    model = make_hf_model(family, 0, dtype=torch.float16)
    view = ModelView.from_model(model)
    tokens = random_tokens(model)
    got = view.forward(tokens)
    assert view.dtype == got.dtype == torch.float16
    ref = hf_logits(model, tokens)
    assert (got.float() - ref.float()).abs().max() <= 2e-3 * ref.float().abs().max()


# ------------------------------------------------------------------------------- refusals


def _no_forward(model):
    def hook(*_):
        raise AssertionError("a forward pass ran before the refusal")

    model.register_forward_pre_hook(hook)
    return model


def _moe():
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = MixtralConfig(vocab_size=20, hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, num_local_experts=2, max_position_embeddings=8)
    with torch.random.fork_rng(devices=[]):
        return MixtralForCausalLM(cfg)


def _unknown_family():
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, ffn_dim=16, num_attention_heads=2,
                    max_position_embeddings=8, word_embed_proj_dim=16)
    with torch.random.fork_rng(devices=[]):
        return OPTForCausalLM(cfg)


def _no_head():
    from transformers import LlamaConfig, LlamaModel

    with torch.random.fork_rng(devices=[]):
        return LlamaModel(LlamaConfig(vocab_size=20, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=8))


def _mixed_dtypes():
    model = make_hf_model("llama", 0)
    model.lm_head.to(torch.float16)
    return model


REFUSALS = [
    (_moe, "mixture-of-experts"),
    (_unknown_family, "model_type='opt'"),
    (_no_head, "LlamaModel"),
    (lambda: make_hf_model("llama", 0, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}), "rope_type"),
    (lambda: make_hf_model("llama", 0, hidden_act="gelu_10"), "hidden_act"),
    (lambda: make_hf_model("gemma", 0, use_bidirectional_attention=True), "use_bidirectional_attention"),
    (lambda: make_hf_model("gptj", 0, rotary_dim=3), "rotary_dim"),
    (lambda: make_hf_model("gpt_neox", 0, rotary_pct=0.375), "partial_rotary_factor"),
    (lambda: make_hf_model("gpt2", 0, add_cross_attention=True), "add_cross_attention"),
    (_mixed_dtypes, "dtypes"),
]


@pytest.mark.parametrize("build, match", REFUSALS)
def test_refused_before_any_forward(build, match):
    model = _no_forward(build())
    with pytest.raises(UnsupportedModelError, match=match):
        ModelView.from_model(model)
    with pytest.raises(UnsupportedModelError, match=match):
        config_from_model(model)


def test_refuses_other_objects():
    with pytest.raises(UnsupportedModelError, match="Linear"):
        ModelView.from_model(torch.nn.Linear(2, 2))


def test_bad_head_and_port():
    _, view = model_and_view("llama")
    x = torch.zeros(1, 3, view.config.d_model)
    with pytest.raises(ComponentError):
        view.head_projection(0, view.config.n_heads, "q", x, torch.arange(3))
    with pytest.raises(ComponentError):
        view.head_projection(0, 0, "z", x, torch.arange(3))


# ------------------------------------------------------------------- property: query subsets

@settings(max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=st.sampled_from(FAMILIES),
    layer=st.integers(0, 1),
    head=st.integers(0, 3),
    q_pos=st.lists(st.integers(0, 9), min_size=1, max_size=5, unique=True).map(sorted),
    seed=st.integers(0, 2**16),
)
def test_patched_heads_at_query_subsets_equal_full_positions(family, layer, head, q_pos, seed):
    """On unrelated (patched) q, k and v inputs, a head evaluated at some query positions equals
    the same head evaluated at every position, read at those positions (rotary positions, sliding
    windows, grouped k/v and soft caps included)."""
    model, view = model_and_view(family)
    g = torch.Generator().manual_seed(seed)
    q_in, k_in, v_in = (torch.randn(2, 10, view.config.d_model, generator=g) for _ in range(3))
    pos = torch.tensor(q_pos)
    heads = torch.full((2,), head)
    full = view.heads(layer, heads, q_in, k_in, v_in)  # [2, 10, d]
    part = view.heads(layer, heads, q_in[:, pos], k_in, v_in, q_positions=pos)  # [2, q, d]
    torch.testing.assert_close(part, full[:, pos], atol=1e-5, rtol=0)
    torch.testing.assert_close(view.all_heads(layer, q_in, k_in, v_in)[:, :, head], full, atol=1e-5, rtol=0)
