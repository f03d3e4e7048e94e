"""Reading a HuggingFace causal LM's weights into the tensors of a `ModelView`.

One reader per family lays each family's modules out as the view's weights (per-head
``[heads, d_model, d_head]`` projections, ``[heads, d_head, d_model]`` outputs, ``[d, out]``
MLP matrices); biases a module lacks become zeros, so every addition the view does is exact.
Gemma's embedding scale is folded into ``W_E`` (multiplied in the model's dtype, as Gemma does).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from scrub.model.config import ViewConfig

__all__ = ["weights_from_hf"]

Weights = dict[str, Optional[Tensor]]


def _t(x: Tensor) -> Tensor:
    return x.detach().clone().contiguous()


def _stack(xs: list[Tensor]) -> Tensor:
    return torch.stack([x.detach() for x in xs]).contiguous()


def _bias(linear: nn.Module, n_out: int) -> Tensor:
    b = getattr(linear, "bias", None)
    w = linear.weight
    return b.detach() if b is not None else torch.zeros(n_out, dtype=w.dtype, device=w.device)


def _in_heads(w: Tensor, n: int, e: int) -> Tensor:
    """``nn.Linear`` weight ``[n*e, d]`` as per-head ``[n, d, e]``."""
    return w.detach().reshape(n, e, w.shape[-1]).transpose(1, 2)


def _out_heads(w: Tensor, n: int, e: int) -> Tensor:
    """``nn.Linear`` weight ``[d, n*e]`` as per-head ``[n, e, d]``."""
    return w.detach().t().reshape(n, e, w.shape[0])


def _norm_weights(c: ViewConfig, prefix: str, norms: list[nn.Module]) -> Weights:
    out: Weights = {f"{prefix}_w": _stack([n.weight for n in norms])}
    if c.normalization == "layernorm":
        out[f"{prefix}_b"] = _stack([n.bias for n in norms])
    return out


def _final(c: ViewConfig, norm: nn.Module) -> Weights:
    out: Weights = {"ln_final_w": _t(norm.weight)}
    if c.normalization == "layernorm":
        out["ln_final_b"] = _t(norm.bias)
    return out


def _unembed(c: ViewConfig, model: Any) -> Weights:
    head = model.get_output_embeddings()
    return {"W_U": _t(head.weight.t()), "b_U": _t(_bias(head, c.d_vocab_out))}


def _separate_qkvo(c: ViewConfig, attns: list[nn.Module], names: tuple[str, str, str, str]) -> Weights:
    """Attention with separate q/k/v/o ``nn.Linear``s named ``names``."""
    H, Hk, e, d = c.n_heads, c.n_kv_heads, c.d_head, c.d_model
    q, k, v, o = ([getattr(a, n) for a in attns] for n in names)
    return dict(
        W_Q=_stack([_in_heads(m.weight, H, e) for m in q]),
        b_Q=_stack([_bias(m, H * e).reshape(H, e) for m in q]),
        W_K=_stack([_in_heads(m.weight, Hk, e) for m in k]),
        b_K=_stack([_bias(m, Hk * e).reshape(Hk, e) for m in k]),
        W_V=_stack([_in_heads(m.weight, Hk, e) for m in v]),
        b_V=_stack([_bias(m, Hk * e).reshape(Hk, e) for m in v]),
        W_O=_stack([_out_heads(m.weight, H, e) for m in o]),
        b_O=_stack([_bias(m, d) for m in o]),
    )


def _linear_mlp(prefix: str, m: list[nn.Module], d_out: int) -> Weights:
    return {f"W_{prefix}": _stack([x.weight.t() for x in m]), f"b_{prefix}": _stack([_bias(x, d_out) for x in m])}


def _gpt2(model: Any, c: ViewConfig) -> Weights:
    t = model.transformer
    blocks = list(t.h)
    H, e, d = c.n_heads, c.d_head, c.d_model
    qkv_w = [b.attn.c_attn.weight.detach() for b in blocks]  # Conv1D: [d, 3d]
    qkv_b = [b.attn.c_attn.bias.detach() for b in blocks]  # [3d]

    def heads_in(w: Tensor) -> Tensor:  # [d, H*e] -> [H, d, e]
        return w.reshape(d, H, e).permute(1, 0, 2)

    w: Weights = dict(
        W_E=_t(t.wte.weight), W_pos=_t(t.wpe.weight[: c.n_ctx]),
        W_Q=_stack([heads_in(x[:, :d]) for x in qkv_w]), b_Q=_stack([x[:d].reshape(H, e) for x in qkv_b]),
        W_K=_stack([heads_in(x[:, d : 2 * d]) for x in qkv_w]), b_K=_stack([x[d : 2 * d].reshape(H, e) for x in qkv_b]),
        W_V=_stack([heads_in(x[:, 2 * d :]) for x in qkv_w]), b_V=_stack([x[2 * d :].reshape(H, e) for x in qkv_b]),
        W_O=_stack([b.attn.c_proj.weight.reshape(H, e, d) for b in blocks]), b_O=_stack([b.attn.c_proj.bias for b in blocks]),
        W_in=_stack([b.mlp.c_fc.weight for b in blocks]), b_in=_stack([b.mlp.c_fc.bias for b in blocks]),
        W_out=_stack([b.mlp.c_proj.weight for b in blocks]), b_out=_stack([b.mlp.c_proj.bias for b in blocks]),
    )
    w.update(_norm_weights(c, "ln1", [b.ln_1 for b in blocks]), **_norm_weights(c, "ln2", [b.ln_2 for b in blocks]))
    return {**w, **_final(c, t.ln_f), **_unembed(c, model)}


def _gpt_neox(model: Any, c: ViewConfig) -> Weights:
    base = model.gpt_neox
    layers = list(base.layers)
    H, e, d = c.n_heads, c.d_head, c.d_model
    w: Weights = dict(W_E=_t(base.embed_in.weight), W_pos=None)
    for i, name in enumerate(("Q", "K", "V")):  # fused per head: [H, (q, k, v), e] rows
        w[f"W_{name}"] = _stack(
            [l.attention.query_key_value.weight.reshape(H, 3, e, d)[:, i].transpose(1, 2) for l in layers]
        )
        w[f"b_{name}"] = _stack([_bias(l.attention.query_key_value, 3 * H * e).reshape(H, 3, e)[:, i] for l in layers])
    w.update(
        W_O=_stack([_out_heads(l.attention.dense.weight, H, e) for l in layers]),
        b_O=_stack([_bias(l.attention.dense, d) for l in layers]),
        **_linear_mlp("in", [l.mlp.dense_h_to_4h for l in layers], c.d_mlp or 0),
        **_linear_mlp("out", [l.mlp.dense_4h_to_h for l in layers], d),
        **_norm_weights(c, "ln1", [l.input_layernorm for l in layers]),
        **_norm_weights(c, "ln2", [l.post_attention_layernorm for l in layers]),
    )
    return {**w, **_final(c, base.final_layer_norm), **_unembed(c, model)}


def _gptj(model: Any, c: ViewConfig) -> Weights:
    t = model.transformer
    blocks = list(t.h)
    w: Weights = dict(W_E=_t(t.wte.weight), W_pos=None)
    w.update(_separate_qkvo(c, [b.attn for b in blocks], ("q_proj", "k_proj", "v_proj", "out_proj")))
    w.update(
        **_linear_mlp("in", [b.mlp.fc_in for b in blocks], c.d_mlp or 0),
        **_linear_mlp("out", [b.mlp.fc_out for b in blocks], c.d_model),
        **_norm_weights(c, "ln1", [b.ln_1 for b in blocks]),
        **_norm_weights(c, "ln2", [b.ln_1 for b in blocks]),  # one norm feeds attention and MLP
    )
    return {**w, **_final(c, t.ln_f), **_unembed(c, model)}


def _llama_like(model: Any, c: ViewConfig) -> Weights:
    base = model.model
    layers = list(base.layers)
    W_E = base.embed_tokens.weight.detach()
    if c.embed_scale is not None:  # Gemma: the scale in the weights' dtype, as its embedding multiplies
        scale = getattr(base.embed_tokens, "embed_scale", None)
        if not isinstance(scale, Tensor):
            scale = torch.tensor(c.embed_scale, dtype=torch.float32)
        W_E = W_E * scale.to(device=W_E.device, dtype=W_E.dtype)
    w: Weights = dict(W_E=_t(W_E), W_pos=None)
    w.update(_separate_qkvo(c, [l.self_attn for l in layers], ("q_proj", "k_proj", "v_proj", "o_proj")))
    m = c.d_mlp or 0
    w.update(
        **_linear_mlp("gate", [l.mlp.gate_proj for l in layers], m),
        **_linear_mlp("in", [l.mlp.up_proj for l in layers], m),
        **_linear_mlp("out", [l.mlp.down_proj for l in layers], c.d_model),
        **_norm_weights(c, "ln1", [l.input_layernorm for l in layers]),
    )
    if c.post_norms:  # Gemma-2
        w.update(
            **_norm_weights(c, "ln2", [l.pre_feedforward_layernorm for l in layers]),
            ln_attn_out_w=_stack([l.post_attention_layernorm.weight for l in layers]),
            ln_mlp_out_w=_stack([l.post_feedforward_layernorm.weight for l in layers]),
        )
    else:
        w.update(_norm_weights(c, "ln2", [l.post_attention_layernorm for l in layers]))
    return {**w, **_final(c, base.norm), **_unembed(c, model)}


_READERS: dict[str, Callable[[Any, ViewConfig], Weights]] = {
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "gptj": _gptj,
    "llama": _llama_like,
    "mistral": _llama_like,
    "qwen2": _llama_like,
    "gemma": _llama_like,
    "gemma2": _llama_like,
}


def weights_from_hf(model: Any, config: ViewConfig) -> Weights:
    """Detached copies of a HuggingFace causal LM's weights, by `ModelView` field name, for the
    ``config`` `scrub.model.hf_config.config_from_hf` read from it."""
    with torch.no_grad():
        weights = _READERS[config.family](model, config)
        weights["rotary_inv_freq"] = _inv_freq(model, config)
    return weights


def _inv_freq(model: Any, c: ViewConfig) -> Optional[Tensor]:
    """The model's own rotary inverse frequencies as float32 (computed from the config where the
    model holds a sin/cos table instead, as GPT-J does)."""
    if c.positional != "rotary" or c.rotary_dim is None:
        return None
    from scrub.model.rotary import inverse_frequencies

    base = getattr(model, "gpt_neox", None) or getattr(model, "model", None)
    held = getattr(getattr(base, "rotary_emb", None), "inv_freq", None)
    if isinstance(held, Tensor) and held.shape == (c.rotary_dim // 2,):
        return held.detach().to(torch.float32).clone()
    return inverse_frequencies(c.rotary_dim, c.rotary_base, model.get_input_embeddings().weight.device)
