"""Reading a HuggingFace causal LM's architecture into a `ViewConfig` (no weights copied).

`config_from_hf` dispatches on ``model.config.model_type`` to one reader per family in
`FAMILIES`; each reads the settings its family's ``transformers`` modelling code uses (norm kind
and eps, rotary dimension, base and pairing, grouped-query heads, gated MLP, parallel blocks,
attention scaling, soft caps, sliding windows, post-norms) and raises `UnsupportedModelError`
for any setting that code has and the view does not implement, before any forward pass.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from scrub.errors import UnsupportedModelError
from scrub.model.config import ViewConfig
from scrub.model.mlps import SUPPORTED_ACT_FNS

__all__ = ["FAMILIES", "config_from_hf", "refuse_hf"]

_MOE_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size", "num_experts_per_tok")
_LAYER_TYPES = ("full_attention", "sliding_attention")


def refuse_hf(family: str, setting: str, value: Any, why: str, fix: str = "") -> UnsupportedModelError:
    """The `UnsupportedModelError` for a HuggingFace setting the view does not implement."""
    fix = fix or "use a model without this setting (scrub's supported families are listed in the README, 'Models')"
    return UnsupportedModelError(
        f"unsupported model setting for a {family!r} model: {setting}={value!r} ({why}); {fix}"
    )


def _act(family: str, name: str, value: Any) -> str:
    if value not in SUPPORTED_ACT_FNS:
        raise refuse_hf(family, name, value, f"activation not implemented; supported: {list(SUPPORTED_ACT_FNS)}")
    return value


def _rope(family: str, cfg: Any) -> tuple[float, float]:
    """``(rope_theta, partial_rotary_factor)``, refusing rope scaling variants."""
    params = getattr(cfg, "rope_parameters", None) or {}
    if not isinstance(params, dict) or ("rope_type" not in params and "rope_theta" not in params):
        raise refuse_hf(family, "rope_parameters", params, "per-layer-type rotary parameters are not implemented")
    rope_type = params.get("rope_type", "default")
    if rope_type != "default":
        raise refuse_hf(
            family, "rope_parameters['rope_type']", rope_type,
            "rotary scaling variants (linear, dynamic, yarn, llama3, longrope, ...) are not implemented",
            "use a model with rope_type 'default'",
        )
    return float(params.get("rope_theta", 10000.0)), float(params.get("partial_rotary_factor", 1.0) or 1.0)


def _windows(family: str, cfg: Any, n_layers: int) -> tuple[Optional[int], ...]:
    """Per-layer sliding windows from ``layer_types`` (``None``: full attention)."""
    types = getattr(cfg, "layer_types", None)
    if types is None:
        return ()
    for t in types:
        if t not in _LAYER_TYPES:
            raise refuse_hf(family, "layer_types", t, f"attention type not implemented; supported: {list(_LAYER_TYPES)}")
    window = getattr(cfg, "sliding_window", None)
    if window is not None and (not isinstance(window, int) or window < 1):
        raise refuse_hf(family, "sliding_window", window, "must be a positive integer or None")
    out = tuple(window if t == "sliding_attention" else None for t in types[:n_layers])
    return out if any(w is not None for w in out) else ()


def _scales(divisor: float, n_layers: int) -> dict[str, Any]:
    return dict(attn_scale=divisor, layer_attn_scales=(divisor,) * n_layers)


def _gpt2(cfg: Any) -> ViewConfig:
    for name in ("add_cross_attention", "is_encoder_decoder"):
        if getattr(cfg, name, False):
            raise refuse_hf("gpt2", name, True, "cross-attention is not part of a decoder-only model")
    L, H, d = cfg.n_layer, cfg.n_head, cfg.n_embd
    e = d // H
    base = math.sqrt(e) if cfg.scale_attn_weights else 1.0
    scales = tuple(base * (l + 1) if cfg.scale_attn_by_inverse_layer_idx else base for l in range(L))
    return ViewConfig(
        n_layers=L, n_heads=H, d_model=d, d_head=e, d_mlp=cfg.n_inner or 4 * d,
        d_vocab=cfg.vocab_size, d_vocab_out=cfg.vocab_size, n_ctx=cfg.n_positions, attn_only=False,
        # a GPT-2 whose attention is bidirectional (`is_causal=False`, as the zoo's HF form of a
        # bidirectional model) is read as such: no causal mask
        positional="standard", causal=bool(getattr(cfg, "is_causal", True)), normalization="layernorm",
        act_fn=_act("gpt2", "activation_function", cfg.activation_function), eps=float(cfg.layer_norm_epsilon),
        attn_scale=base, layer_attn_scales=scales, family="gpt2",
        attn_fp32=bool(getattr(cfg, "reorder_and_upcast_attn", False)),
    )


def _gpt_neox(cfg: Any) -> ViewConfig:
    L, H, d = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size
    e = d // H
    theta, partial = _rope("gpt_neox", cfg)
    rotary_dim = int(e * partial)
    if rotary_dim % 2 or rotary_dim == 0:
        raise refuse_hf("gpt_neox", "partial_rotary_factor", partial, f"gives an odd or zero rotary dimension {rotary_dim} for head size {e}")
    return ViewConfig(
        n_layers=L, n_heads=H, d_model=d, d_head=e, d_mlp=cfg.intermediate_size,
        d_vocab=cfg.vocab_size, d_vocab_out=cfg.vocab_size, n_ctx=cfg.max_position_embeddings, attn_only=False,
        positional="rotary", causal=True, normalization="layernorm",
        act_fn=_act("gpt_neox", "hidden_act", cfg.hidden_act), eps=float(cfg.layer_norm_eps),
        **_scales(math.sqrt(e), L), family="gpt_neox", rotary_dim=rotary_dim, rotary_base=theta,
        rotary_pairing="neox", parallel_blocks=bool(cfg.use_parallel_residual),
    )


def _gptj(cfg: Any) -> ViewConfig:
    L, H, d = cfg.n_layer, cfg.n_head, cfg.n_embd
    e = d // H
    r = cfg.rotary_dim
    if r is None or r <= 0 or r % 2 or r > e:
        raise refuse_hf("gptj", "rotary_dim", r, f"the view needs an even rotary_dim in 2..head_dim={e}")
    return ViewConfig(
        n_layers=L, n_heads=H, d_model=d, d_head=e, d_mlp=cfg.n_inner or 4 * d,
        d_vocab=cfg.vocab_size, d_vocab_out=cfg.vocab_size, n_ctx=cfg.n_positions, attn_only=False,
        positional="rotary", causal=True, normalization="layernorm",
        act_fn=_act("gptj", "activation_function", cfg.activation_function), eps=float(cfg.layer_norm_epsilon),
        **_scales(math.sqrt(e), L), family="gptj", rotary_dim=r, rotary_base=10000.0,
        rotary_pairing="gptj", parallel_blocks=True, attn_fp32=True,
    )


def _llama_like(family: str, cfg: Any, **extra: Any) -> ViewConfig:
    """Llama, Mistral, Qwen2, Gemma, Gemma-2: RMSNorm, rotary (full head, NeoX pairing), GQA, gated MLP."""
    if getattr(cfg, "use_bidirectional_attention", False):
        raise refuse_hf(family, "use_bidirectional_attention", True, "bidirectional attention of a causal LM is not implemented")
    L, H, d = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size
    e = getattr(cfg, "head_dim", None) or d // H
    theta, _partial = _rope(family, cfg)  # these families rotate the whole head (modelling code)
    n_kv = getattr(cfg, "num_key_value_heads", None) or H
    if H % n_kv:
        raise refuse_hf(family, "num_key_value_heads", n_kv, f"must divide num_attention_heads={H}")
    if e % 2:
        raise refuse_hf(family, "head_dim", e, "rotary embeddings need an even head dimension")
    act_name = "hidden_activation" if family == "gemma2" else "hidden_act"
    fields: dict[str, Any] = dict(
        n_layers=L, n_heads=H, d_model=d, d_head=e, d_mlp=cfg.intermediate_size,
        d_vocab=cfg.vocab_size, d_vocab_out=cfg.vocab_size, n_ctx=cfg.max_position_embeddings, attn_only=False,
        positional="rotary", causal=True, normalization="rms",
        act_fn=_act(family, act_name, getattr(cfg, act_name)), eps=float(cfg.rms_norm_eps),
        **_scales(math.sqrt(e), L), family=family, n_key_value_heads=n_kv, rotary_dim=e,
        rotary_base=theta, rotary_pairing="neox", gated_mlp=True,
    )
    fields.update(extra)
    return ViewConfig(**fields)


def _llama(cfg: Any) -> ViewConfig:
    return _llama_like("llama", cfg)


def _mistral(cfg: Any) -> ViewConfig:
    w = getattr(cfg, "sliding_window", None)
    if w is not None and (not isinstance(w, int) or w < 1):
        raise refuse_hf("mistral", "sliding_window", w, "must be a positive integer or None")
    return _llama_like("mistral", cfg, sliding_windows=() if w is None else (w,) * cfg.num_hidden_layers)


def _qwen2(cfg: Any) -> ViewConfig:
    return _llama_like("qwen2", cfg, sliding_windows=_windows("qwen2", cfg, cfg.num_hidden_layers))


def _gemma(cfg: Any) -> ViewConfig:
    return _llama_like("gemma", cfg, normalization="rms_1p", embed_scale=cfg.hidden_size**0.5)


def _gemma2(cfg: Any) -> ViewConfig:
    L = cfg.num_hidden_layers
    divisor = float(cfg.query_pre_attn_scalar) ** 0.5
    return _llama_like(
        "gemma2", cfg, normalization="rms_1p", embed_scale=cfg.hidden_size**0.5, post_norms=True,
        attn_softcap=cfg.attn_logit_softcapping, logit_softcap=cfg.final_logit_softcapping,
        sliding_windows=_windows("gemma2", cfg, L), **_scales(divisor, L),
    )


#: The HuggingFace ``model_type``s the view reads, and their readers.
FAMILIES: dict[str, Callable[[Any], ViewConfig]] = {
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "gptj": _gptj,
    "llama": _llama,
    "mistral": _mistral,
    "qwen2": _qwen2,
    "gemma": _gemma,
    "gemma2": _gemma2,
}


def config_from_hf(model: Any) -> ViewConfig:
    """Read a HuggingFace causal LM's architecture (no weights copied).

    Raises:
        UnsupportedModelError: no causal-LM head, a ``model_type`` outside `FAMILIES`,
            mixture-of-experts, or a setting of the family the view does not implement.
    """
    cfg = getattr(model, "config", None)
    family = getattr(cfg, "model_type", None)
    for name in _MOE_FIELDS:
        if getattr(cfg, name, None):
            raise refuse_hf(str(family), name, getattr(cfg, name), "mixture-of-experts MLPs are not supported")
    if family not in FAMILIES:
        raise UnsupportedModelError(
            f"unsupported model family: model_type={family!r} ({type(model).__name__}); scrub reads "
            f"HuggingFace causal LMs of the families {sorted(FAMILIES)} and TransformerLens "
            f"HookedTransformers; convert the model to one of them"
        )
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise refuse_hf(
            family, "model class", type(model).__name__, "no language-model head",
            "load it with AutoModelForCausalLM (a *ForCausalLM class)",
        )
    config = FAMILIES[family](cfg)
    if getattr(cfg, "_attn_implementation", None) == "eager":
        config = _with(config, attn_eager=True)
    embed = model.get_input_embeddings()
    d_vocab = getattr(embed, "num_embeddings", config.d_vocab)
    d_vocab_out = getattr(head, "out_features", config.d_vocab_out)
    if (d_vocab, d_vocab_out) != (config.d_vocab, config.d_vocab_out):  # resized embeddings
        config = _with(config, d_vocab=d_vocab, d_vocab_out=d_vocab_out)
    return config


def _with(config: ViewConfig, **changes: Any) -> ViewConfig:
    import attrs

    return attrs.evolve(config, **changes)
