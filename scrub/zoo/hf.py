"""Zoo models as plain HuggingFace GPT-2 models (``GPT2LMHeadModel``), for TransformerLens 4.

TransformerLens 4 has no ``HookedTransformer``, so there `scrub.zoo.load` returns the same
weights in a ``transformers`` GPT-2 with the same forward pass:

* ``embed.W_E`` -> ``wte``, ``pos_embed.W_pos`` -> ``wpe`` (learned positions, ``n_positions = n_ctx``);
* per layer, the per-head ``W_Q/W_K/W_V [h, d_model, d_head]`` -> the fused ``c_attn`` (Conv1D,
  ``[d_model, 3 * h * d_head]``, columns ``[q | k | v]``, head-major inside each), ``W_O`` ->
  ``attn.c_proj``; LayerNorms ``ln1``/``ln2``/``ln_final`` -> ``ln_1``/``ln_2``/``ln_f`` with the
  config's ``eps``; attention scaled by ``1/sqrt(d_head)`` as TransformerLens does;
* an attention-only model gets MLPs whose weights and biases are all zero (``n_inner = d_model``):
  ``W_out @ act(...) + b_out`` is then exactly zero, so each block adds exactly what its heads add;
* the unembedding ``W_U``, ``b_U`` -> an untied ``lm_head`` with a bias, ``d_vocab_out`` wide
  (a classifier such as parens-3l has 2 outputs for 5 input tokens);
* bidirectional attention: ``config.is_causal = False`` and each attention module's
  ``is_causal = False``, eager attention (no mask at all, as TransformerLens without padding).

Only what GPT-2 can express is converted; anything else (RMSNorm, rotary, ``d_head * n_heads !=
d_model``, an activation GPT-2 lacks) is an `UnsupportedModelError` naming the setting.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from scrub.errors import UnsupportedModelError

__all__ = ["gpt2_config", "gpt2_from_state"]

_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_new"}


def _refuse(name: str, setting: str, value: Any) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"zoo model {name!r} cannot be expressed as a HuggingFace GPT-2: {setting}={value!r}; load it as a "
        f"HookedTransformer with the TransformerLens 3 line (pip install -c constraints.txt 'transformer-lens<4')"
    )


def gpt2_config(config: Mapping[str, Any]):
    """The ``transformers.GPT2Config`` of a zoo model's ``HookedTransformerConfig`` keyword arguments.

    Raises:
        UnsupportedModelError: a setting plain GPT-2 does not have (the message names it).
    """
    from transformers import GPT2Config

    name = config.get("model_name", "?")
    d_model, n_heads, d_head = int(config["d_model"]), int(config["n_heads"]), int(config["d_head"])
    checks = [
        ("normalization_type", config.get("normalization_type", "LN"), lambda v: v == "LN"),
        ("positional_embedding_type", config.get("positional_embedding_type", "standard"), lambda v: v == "standard"),
        ("attention_dir", config.get("attention_dir", "causal"), lambda v: v in ("causal", "bidirectional")),
        ("n_heads * d_head", n_heads * d_head, lambda v: v == d_model),
        ("use_attn_scale", config.get("use_attn_scale", True), lambda v: v is True),
        ("attn_scale", config.get("attn_scale", d_head**0.5), lambda v: abs(float(v) - d_head**0.5) < 1e-12),
    ]
    if not config.get("attn_only", False):
        checks.append(("act_fn", config.get("act_fn"), lambda v: v in _ACTIVATIONS))
    for setting, value, ok in checks:
        if not ok(value):
            raise _refuse(name, setting, value)
    attn_only = bool(config.get("attn_only", False))
    gpt2 = GPT2Config(
        vocab_size=int(config["d_vocab"]),
        n_positions=int(config["n_ctx"]),
        n_embd=d_model,
        n_layer=int(config["n_layers"]),
        n_head=n_heads,
        n_inner=d_model if attn_only else int(config["d_mlp"]),
        activation_function="relu" if attn_only else _ACTIVATIONS[config["act_fn"]],
        layer_norm_epsilon=float(config.get("eps", 1e-5)),
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    gpt2.is_causal = config.get("attention_dir", "causal") == "causal"
    gpt2._attn_implementation = "eager"
    gpt2._name_or_path = f"scrub-zoo/{name}"
    return gpt2


def _converted(config: Mapping[str, Any], state: Mapping[str, Tensor], gpt2) -> dict[str, Tensor]:
    """The GPT-2 state dict (HF names) of a zoo model's TransformerLens state dict."""
    d_model = gpt2.n_embd
    out = {
        "transformer.wte.weight": state["embed.W_E"],  # [d_vocab, d_model]
        "transformer.wpe.weight": state["pos_embed.W_pos"],  # [n_ctx, d_model]
        "transformer.ln_f.weight": state["ln_final.w"],
        "transformer.ln_f.bias": state["ln_final.b"],
        "lm_head.weight": state["unembed.W_U"].T,  # [d_vocab_out, d_model]
        "lm_head.bias": state["unembed.b_U"],
    }
    for i in range(gpt2.n_layer):
        p, q = f"blocks.{i}.", f"transformer.h.{i}."
        w = [state[p + f"attn.W_{x}"].permute(1, 0, 2).reshape(d_model, -1) for x in "QKV"]  # 3 x [d_model, h*e]
        b = [state[p + f"attn.b_{x}"].reshape(-1) for x in "QKV"]  # 3 x [h*e]
        out[q + "attn.c_attn.weight"] = torch.cat(w, dim=1)  # [d_model, 3*h*e]
        out[q + "attn.c_attn.bias"] = torch.cat(b)
        out[q + "attn.c_proj.weight"] = state[p + "attn.W_O"].reshape(-1, d_model)  # [h*e, d_model]
        out[q + "attn.c_proj.bias"] = state[p + "attn.b_O"]
        out[q + "ln_1.weight"], out[q + "ln_1.bias"] = state[p + "ln1.w"], state[p + "ln1.b"]
        if config.get("attn_only", False):
            zero = state["embed.W_E"].new_zeros
            out[q + "ln_2.weight"], out[q + "ln_2.bias"] = zero(d_model) + 1, zero(d_model)
            out[q + "mlp.c_fc.weight"], out[q + "mlp.c_fc.bias"] = zero(d_model, gpt2.n_inner), zero(gpt2.n_inner)
            out[q + "mlp.c_proj.weight"], out[q + "mlp.c_proj.bias"] = zero(gpt2.n_inner, d_model), zero(d_model)
        else:
            out[q + "ln_2.weight"], out[q + "ln_2.bias"] = state[p + "ln2.w"], state[p + "ln2.b"]
            out[q + "mlp.c_fc.weight"], out[q + "mlp.c_fc.bias"] = state[p + "mlp.W_in"], state[p + "mlp.b_in"]
            out[q + "mlp.c_proj.weight"], out[q + "mlp.c_proj.bias"] = state[p + "mlp.W_out"], state[p + "mlp.b_out"]
    return {k: v.contiguous() for k, v in out.items()}


def gpt2_from_state(config: Mapping[str, Any], state: Mapping[str, Tensor]):
    """A ``GPT2LMHeadModel`` (eval mode, float32 as stored) with a zoo model's weights.

    Raises:
        UnsupportedModelError: the config has a setting plain GPT-2 does not (see `gpt2_config`).
        KeyError: the state lacks a TransformerLens parameter the config implies (the caller,
            `scrub.zoo.load`, reports it as a `ScrubError`).
    """
    from torch import nn
    from transformers import GPT2LMHeadModel

    gpt2 = gpt2_config(config)
    with torch.random.fork_rng(devices=[]):  # construction initialises from the global RNG
        torch.manual_seed(0)
        model = GPT2LMHeadModel(gpt2)
        d_vocab_out = int(config.get("d_vocab_out", -1))
        d_vocab_out = gpt2.vocab_size if d_vocab_out == -1 else d_vocab_out
        model.lm_head = nn.Linear(gpt2.n_embd, d_vocab_out, bias=True)  # b_U; no tying
    for block in model.transformer.h:
        block.attn.is_causal = gpt2.is_causal
    with torch.no_grad():
        model.load_state_dict(_converted(config, state, gpt2), strict=True)
    return model.eval()
