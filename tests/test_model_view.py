"""The model view against TransformerLens: logits, clean-pass activations, heads and MLPs on
patched port inputs, for every supported configuration; and refusal of unsupported ones."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from scrub.components import hooks
from scrub.errors import ComponentError, DatasetError, UnsupportedModelError
from scrub.model import CleanPass, ModelView, ViewConfig
from scrub.tlcompat import hooked_transformer_available

if hooked_transformer_available():  # TransformerLens 3; under 4 the module is skipped (requires_hooked)
    from transformer_lens import HookedTransformer, HookedTransformerConfig

pytestmark = pytest.mark.requires_hooked

D_VOCAB, N_CTX, N_LAYERS, N_HEADS, D_MODEL = 20, 10, 2, 4, 32
ATOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny matmuls are far slower multi-threaded on a busy machine; restore afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomize(model: HookedTransformer, seed: int) -> HookedTransformer:
    """Overwrite EVERY parameter (biases and LayerNorm weights included) from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            leaf = name.split(".")[-1]
            if leaf == "w":  # LayerNorm weight
                p.copy_(1 + 0.2 * noise)
            elif p.ndim == 1 or leaf.startswith("b") or leaf.startswith("_b"):  # biases
                p.copy_(0.2 * noise)
            else:  # matrices, scaled by fan-in so unnormalised models stay tame
                p.copy_(noise / p.shape[-2] ** 0.5)
    return model


def make_model(seed: int = 0, **overrides) -> HookedTransformer:
    kwargs = dict(
        n_layers=N_LAYERS,
        d_model=D_MODEL,
        n_heads=N_HEADS,
        d_head=8,
        d_vocab=D_VOCAB,
        n_ctx=N_CTX,
        act_fn="relu",
        device="cpu",
        init_weights=False,  # every weight is set by `randomize`; no global RNG
    )
    kwargs.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(HookedTransformerConfig(**kwargs))
    return randomize(model, seed).eval()


def tokens(n: int = 3, pos: int = N_CTX, seed: int = 1, vocab: int = D_VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, pos), generator=g)


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> bool:
    assert a.shape == b.shape, (a.shape, b.shape)
    return torch.allclose(a, b, atol=atol, rtol=0)


MLPS = {"attn_only": dict(attn_only=True), "relu": dict(act_fn="relu"), "gelu": dict(act_fn="gelu")}
CONFIGS = [
    pytest.param(
        {**MLPS[mlp], "positional_embedding_type": pos, "attention_dir": attn,
         "normalization_type": norm, "d_vocab_out": vocab_out},
        id=f"{mlp}-{pos}-{attn}-{norm}-out{vocab_out}",
    )
    for mlp, pos, attn, norm, vocab_out in itertools.product(
        MLPS,
        ("standard", "shortformer"),
        ("causal", "bidirectional"),
        ("LN", "LNPre", None),
        (-1, 7),
    )
]


@pytest.mark.parametrize("overrides", CONFIGS)
def test_matches_transformer_lens(overrides):
    model = make_model(**overrides)
    view = ModelView.from_hooked(model)
    cfg = view.config
    toks = tokens()

    # 1. forward equals TransformerLens's logits (default hook settings).
    with torch.no_grad():
        expected = model(toks)
    assert close(view.forward(toks), expected)
    assert close(view.forward(toks[:, :6]), model(toks[:, :6]).detach())

    # 2. clean pass equals run_with_cache, component by component.
    model.set_use_attn_result(True)
    with torch.no_grad():
        logits, cache = model.run_with_cache(toks)
    cp = view.clean_pass(toks)
    assert isinstance(cp, CleanPass)
    assert close(cp.logits, logits)
    assert close(cp.embed, cache[hooks.embed()])
    if cfg.positional == "standard":
        assert close(cp.pos, cache[hooks.pos_embed()])
    else:  # shortformer: positions are not in the residual stream
        assert torch.equal(cp.pos, torch.zeros_like(cp.embed))
    for layer in range(N_LAYERS):
        assert close(cp.resid_pre[layer], cache[hooks.resid_pre(layer)])
        assert close(cp.head_out[layer], cache[hooks.head_result(layer)])
        if cfg.attn_only:
            assert cp.resid_mid is None and cp.mlp_out is None
        else:
            assert close(cp.resid_mid[layer], cache[hooks.resid_mid(layer)])
            assert close(cp.mlp_out[layer], cache[hooks.mlp_out(layer)])
    assert close(cp.resid_final, cache[hooks.final_resid(N_LAYERS)])

    # 3. the residual stream decomposes exactly into component outputs.
    resid = cp.embed + cp.pos
    for layer in range(N_LAYERS):
        assert close(cp.resid_pre[layer], resid, 1e-5)
        resid = resid + cp.head_out[layer].sum(2) + view.attn_bias(layer)
        if not cfg.attn_only:
            resid = resid + cp.mlp_out[layer]
    assert close(cp.resid_final, resid, 1e-5)

    # 4. heads() on arbitrary, different q/k/v inputs per head = TL with patched split inputs.
    check_heads_on_patched_inputs(model, view, toks)

    # 5. mlp() on an arbitrary input = TL with a patched hook_mlp_in.
    if not cfg.attn_only:
        check_mlp_on_patched_inputs(model, view, toks)


def check_heads_on_patched_inputs(model, view, toks, seed: int = 5):
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    g = torch.Generator().manual_seed(seed)
    n, p = toks.shape
    patched = {
        hooks.head_input(layer, port): 1.5 * torch.randn(n, p, N_HEADS, D_MODEL, generator=g) + 0.3
        for layer in range(N_LAYERS)
        for port in ("q", "k", "v")
    }
    results: dict[str, torch.Tensor] = {}

    def patch(value, hook):
        return patched[hook.name]

    def save(value, hook):
        results[hook.name] = value.detach()

    fwd_hooks = [(name, patch) for name in patched]
    fwd_hooks += [(hooks.head_result(layer), save) for layer in range(N_LAYERS)]
    with torch.no_grad(), model.hooks(fwd_hooks=fwd_hooks):
        model(toks)
    for layer in range(N_LAYERS):
        # One row per (example, head), shuffled so neighbouring rows carry different heads.
        ex, head = torch.meshgrid(torch.arange(n), torch.arange(N_HEADS), indexing="ij")
        order = torch.randperm(n * N_HEADS, generator=g)
        ex, head = ex.flatten()[order], head.flatten()[order]
        q, k, v = (patched[hooks.head_input(layer, port)][ex, :, head] for port in ("q", "k", "v"))
        got = view.heads(layer, head, q, k, v)  # [rows, p, d]
        want = results[hooks.head_result(layer)][ex, :, head]  # [rows, p, d]
        assert close(got, want), (layer, (got - want).abs().max())


def check_mlp_on_patched_inputs(model, view, toks, seed: int = 6):
    model.set_use_hook_mlp_in(True)
    g = torch.Generator().manual_seed(seed)
    n, p = toks.shape
    patched = {
        hooks.mlp_in(layer): 2 * torch.randn(n, p, D_MODEL, generator=g) for layer in range(N_LAYERS)
    }
    results: dict[str, torch.Tensor] = {}

    def patch(value, hook):
        return patched[hook.name]

    def save(value, hook):
        results[hook.name] = value.detach()

    fwd_hooks = [(name, patch) for name in patched]
    fwd_hooks += [(hooks.mlp_out(layer), save) for layer in range(N_LAYERS)]
    with torch.no_grad(), model.hooks(fwd_hooks=fwd_hooks):
        model(toks)
    for layer in range(N_LAYERS):
        got = view.mlp(layer, patched[hooks.mlp_in(layer)])
        assert close(got, results[hooks.mlp_out(layer)]), layer


@pytest.mark.parametrize(
    "act_fn", ["gelu_new", "gelu_fast", "gelu_pytorch_tanh", "silu", "relu2", "solu"]
)
def test_other_activations(act_fn):
    model = make_model(act_fn=act_fn)
    view = ModelView.from_hooked(model)
    toks = tokens()
    assert close(view.forward(toks), model(toks).detach())
    check_mlp_on_patched_inputs(model, view, toks)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(use_attn_scale=False),
        dict(attn_scale=3.0),
        dict(scale_attn_by_inverse_layer_idx=True, n_layers=3),
        dict(eps=1e-2),
        dict(n_key_value_heads=N_HEADS),  # GQA module with one kv head per head: plain attention
        dict(d_mlp=48, d_head=4, n_heads=3),
        dict(positional_embedding_type="shortformer", n_key_value_heads=N_HEADS),
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_other_supported_settings(overrides):
    model = make_model(**overrides)
    view = ModelView.from_hooked(model)
    toks = tokens()
    assert close(view.forward(toks), model(toks).detach())
    same_shape = overrides.get("n_heads", N_HEADS) == N_HEADS
    if same_shape and overrides.get("n_layers", N_LAYERS) == N_LAYERS:
        check_heads_on_patched_inputs(model, view, toks)


def test_config_fields():
    model = make_model(positional_embedding_type="shortformer", d_vocab_out=7, act_fn="gelu")
    cfg = ModelView.from_hooked(model).config
    assert isinstance(cfg, ViewConfig)
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head) == (N_LAYERS, N_HEADS, D_MODEL, 8)
    assert (cfg.d_mlp, cfg.d_vocab, cfg.d_vocab_out, cfg.n_ctx) == (4 * D_MODEL, D_VOCAB, 7, N_CTX)
    assert cfg.positional == "shortformer" and cfg.causal and not cfg.attn_only
    assert cfg.normalization == "LN" and cfg.act_fn == "gelu" and cfg.eps == 1e-5
    assert cfg.attn_scale == pytest.approx(8**0.5)
    assert cfg.layer_attn_scales == pytest.approx((8**0.5,) * N_LAYERS)
    attn_only = ModelView.from_hooked(make_model(attn_only=True)).config
    assert attn_only.d_mlp is None and attn_only.act_fn is None and attn_only.attn_only
    layered = ModelView.from_hooked(make_model(scale_attn_by_inverse_layer_idx=True)).config
    assert layered.layer_attn_scales == pytest.approx((8**0.5, 2 * 8**0.5))


def test_folded_layer_norm_model():
    model = make_model()
    toks = tokens()
    model.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    view = ModelView.from_hooked(model)
    assert view.config.normalization == "LNPre"
    assert close(view.forward(toks), model(toks).detach())


def test_dtype_and_device_follow_the_model():
    model = make_model(dtype=torch.float64)
    view = ModelView.from_hooked(model)
    assert view.dtype == torch.float64 and view.device == torch.device("cpu")
    toks = tokens()
    out = view.forward(toks)
    assert out.dtype == torch.float64
    assert close(out, model(toks).detach(), 1e-10)
    as32 = view.to(dtype=torch.float32)
    assert as32.dtype == torch.float32 and close(as32.forward(toks), out.float())

    bf16 = make_model(dtype=torch.bfloat16)
    got = ModelView.from_hooked(bf16).forward(toks)
    assert got.dtype == torch.bfloat16
    assert close(got.float(), bf16(toks).detach().float(), 0.1)


def test_view_is_a_detached_snapshot():
    model = make_model()
    view = ModelView.from_hooked(model)
    toks = tokens()
    before = view.forward(toks)
    for field in ("W_E", "W_Q", "W_in", "ln1_w", "W_U"):
        assert not getattr(view, field).requires_grad
    with torch.no_grad():
        model.blocks[0].attn.W_Q.add_(1.0)
        model.embed.W_E.mul_(2.0)
    assert torch.equal(view.forward(toks), before)


def test_component_functions_and_shapes():
    model = make_model()
    view = ModelView.from_hooked(model)
    toks = tokens(n=2, pos=5)
    assert torch.equal(view.embed(toks), model.embed.W_E[toks].detach())
    pos = view.pos_embed(4, 5)
    assert pos.shape == (4, 5, D_MODEL) and torch.equal(pos[3], model.pos_embed.W_pos[:5].detach())
    assert torch.equal(view.attn_bias(1), model.blocks[1].attn.b_O.detach())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, D_MODEL, generator=g)
    y = torch.randn(2, 5, D_MODEL, generator=g)
    every = view.all_heads(0, x, y, x)  # [b, p, H, d]
    assert every.shape == (2, 5, N_HEADS, D_MODEL)
    for h in range(N_HEADS):
        one = view.heads(0, torch.full((2,), h), x, y, x)
        assert close(one, every[:, :, h], 1e-6)
    # A row's result depends only on that row and its own head.
    mixed = view.heads(0, torch.tensor([3, 1]), x, y, x)
    assert close(mixed[0], every[0, :, 3], 1e-6) and close(mixed[1], every[1, :, 1], 1e-6)
    assert view.unembed(x).shape == (2, 5, D_VOCAB)


def test_bad_calls_are_refused_clearly():
    view = ModelView.from_hooked(make_model())
    x = torch.zeros(2, 4, D_MODEL)
    with pytest.raises(ComponentError, match="layer"):
        view.mlp(N_LAYERS, x)
    with pytest.raises(ComponentError, match="head_index"):
        view.heads(0, torch.tensor([0, N_HEADS]), x, x, x)
    with pytest.raises(ComponentError, match="head_index"):
        view.heads(0, torch.tensor([0, -1]), x, x, x)
    with pytest.raises(DatasetError, match="n_ctx"):
        view.forward(tokens(pos=N_CTX + 1))
    attn_only = ModelView.from_hooked(make_model(attn_only=True))
    with pytest.raises(ComponentError, match="attention-only"):
        attn_only.mlp(0, x)


def _swap_ln1(model):
    from transformer_lens.components import LayerNormPre

    model.blocks[1].ln1 = LayerNormPre(model.cfg)
    return model


def _set_cfg(**fields):
    def mutate(model):
        for name, value in fields.items():
            setattr(model.cfg, name, value)
        return model

    return mutate


UNSUPPORTED = [
    ("positional_embedding_type", dict(positional_embedding_type="rotary"), None),
    ("positional_embedding_type", dict(positional_embedding_type="alibi"), None),
    ("normalization_type", dict(normalization_type="RMS"), None),
    ("normalization_type", dict(normalization_type="RMSPre"), None),
    ("n_key_value_heads", dict(n_key_value_heads=2), None),
    ("gated_mlp", dict(gated_mlp=True), None),
    ("num_experts", dict(num_experts=4, experts_per_token=2), None),
    ("parallel_attn_mlp", dict(parallel_attn_mlp=True), None),
    ("attn_scores_soft_cap", dict(attn_scores_soft_cap=30.0), None),
    ("output_logits_soft_cap", dict(output_logits_soft_cap=30.0), None),
    ("use_qk_norm", dict(use_qk_norm=True), None),
    (
        "use_local_attn",
        dict(use_local_attn=True, window_size=3, attn_types=["global", "local"]),
        None,
    ),
    ("attn_types", {}, _set_cfg(attn_types=["local", "global"])),
    ("post_embedding_ln", dict(post_embedding_ln=True), None),
    ("final_rms", dict(final_rms=True), None),
    ("clip_qkv", dict(clip_qkv=5.0), None),
    ("use_logn_attn", dict(use_logn_attn=True), None),
    ("use_attention_sinks", dict(use_attention_sinks=True), None),
    ("original_architecture", dict(original_architecture="Olmo2ForCausalLM"), None),
    ("attention_dir", dict(attention_dir="sideways"), None),
    # TransformerLens can't build these here (its own bug / no GPUs / no bitsandbytes): set on cfg.
    ("use_normalization_before_and_after", {}, _set_cfg(use_normalization_before_and_after=True)),
    ("act_fn", {}, _set_cfg(act_fn="solu_ln")),
    ("act_fn", {}, _set_cfg(act_fn="xielu")),
    ("n_devices", {}, _set_cfg(n_devices=2)),
    ("load_in_4bit", {}, _set_cfg(load_in_4bit=True)),
    # A module that contradicts the config (LayerNorm swapped for its folded form).
    ("blocks.1.ln1", {}, _swap_ln1),
]


@pytest.mark.parametrize(
    "setting, overrides, mutate",
    UNSUPPORTED,
    ids=[f"{s}-{i}" for i, (s, _, _) in enumerate(UNSUPPORTED)],
)
def test_unsupported_settings_are_refused(setting, overrides, mutate):
    model = make_model(**overrides)
    if mutate is not None:
        model = mutate(model)
    with pytest.raises(UnsupportedModelError) as info:
        ModelView.from_hooked(model)
    message = str(info.value)
    assert setting in message
    assert "supports" in message  # says what is supported


def test_non_hooked_transformer_is_refused():
    with pytest.raises(UnsupportedModelError, match="HookedTransformer"):
        ModelView.from_hooked(torch.nn.Linear(2, 2))


def test_from_model_reads_hooked_transformers():
    """`ModelView.from_model` and `config_from_model` dispatch a HookedTransformer to `from_hooked`."""
    from scrub.model import config_from_model

    model = make_model(seed=3)
    toks = torch.randint(0, D_VOCAB, (2, N_CTX), generator=torch.Generator().manual_seed(3))
    via_model = ModelView.from_model(model)
    assert config_from_model(model) == via_model.config == ModelView.from_hooked(model).config
    torch.testing.assert_close(via_model.forward(toks), model(toks), atol=ATOL, rtol=0)

