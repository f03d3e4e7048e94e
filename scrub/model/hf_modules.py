"""Where each HuggingFace causal-LM family keeps its modules: the one place that knows HF module paths.

`scrub.components` is the one place for TransformerLens hook names; this module is its
HuggingFace counterpart. `FAMILIES` maps a ``config.model_type`` to a `FamilyPaths` (the dotted
module paths of one family, read from the installed ``transformers`` modelling code), and
`hf_modules(model)` resolves them on a model into an `HFModules` of live ``nn.Module`` objects.

What the paths mean (each a pre-norm residual quantity, as in DESIGN.md section 1):

* ``embed``: the token embedding; its output is what the token adds to the residual stream
  (Gemma's ``sqrt(d_model)`` scaling lives inside its embedding module, so it is included);
* ``pos_embed``: the learned position embedding (GPT-2 only; rotary families have none);
* per layer: ``attn_norm`` (the norm the attention reads through; its input is the residual a
  head's q/k/v ports read), ``mlp_norm`` (its input is the residual the MLP's ``in`` port reads;
  GPT-J's MLP reads ``ln_1`` like its attention), the q/k/v projections (separate modules, or one
  fused module with a `QKVLayout`), the output projection (its input holds every head's values,
  head-major), and the MLP module;
* ``final_norm``: its input is the residual the output reads;
* post-norm families (Gemma-2): ``attn_out_norm``, the norm applied to the attention's output
  (its input is ``sum_h o_h + b_O``, its output what the attention adds to the residual stream),
  and ``mlp_out``, the module whose output is what the MLP adds (its post-MLP norm).

`check_config(config)` refuses, before anything runs, a family or setting these paths do not
describe (`UnsupportedModelError`, naming it).
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
from torch import nn

from scrub.errors import UnsupportedModelError

__all__ = ["QKVLayout", "FamilyPaths", "LayerModules", "HFModules", "FAMILIES", "check_config", "hf_modules", "is_hf_model"]


@attrs.frozen
class QKVLayout:
    """How a fused q/k/v projection lays out its output features.

    ``"blocks"``: ``[q | k | v]``, each ``n_heads * d_head`` wide (GPT-2 ``c_attn``);
    ``"per_head"``: per head ``[q_h | k_h | v_h]``, i.e. the output viewed as
    ``[..., n_heads, 3, d_head]`` (GPT-NeoX ``query_key_value``: ``view(..., -1, 3 * head_size)``
    then ``chunk(3, dim=-1)``).
    """

    kind: str = attrs.field(validator=attrs.validators.in_(("blocks", "per_head")))


@attrs.frozen
class FamilyPaths:
    """Dotted module paths of one family (``base`` from the causal LM; the rest from ``base`` or a layer)."""

    base: str
    embed: str
    pos_embed: Optional[str]
    layers: str
    final_norm: str
    attn_norm: str
    mlp_norm: str
    attn: str
    out_proj: str  # relative to ``attn``
    mlp: str
    q: Optional[str] = None  # relative to ``attn``; None when fused
    k: Optional[str] = None
    v: Optional[str] = None
    qkv: Optional[str] = None  # the fused projection, relative to ``attn``
    qkv_layout: Optional[QKVLayout] = None
    conv1d: bool = False  # GPT-2's Conv1D: weight [in, out] (nn.Linear: [out, in])
    parallel: Optional[str] = None  # "always", or the config flag that makes attention and MLP read one residual
    attn_out_norm: Optional[str] = None  # post-norms: the norm on the attention's output (relative to a layer)
    mlp_out: Optional[str] = None  # post-norms: the module whose output the MLP adds (relative to a layer)

    @property
    def fused(self) -> bool:
        return self.qkv is not None


_LLAMA_LIKE = FamilyPaths(
    base="model", embed="embed_tokens", pos_embed=None, layers="layers", final_norm="norm",
    attn_norm="input_layernorm", mlp_norm="post_attention_layernorm", attn="self_attn", out_proj="o_proj",
    mlp="mlp", q="q_proj", k="k_proj", v="v_proj",
)

FAMILIES: dict[str, FamilyPaths] = {
    "gpt2": FamilyPaths(
        base="transformer", embed="wte", pos_embed="wpe", layers="h", final_norm="ln_f", attn_norm="ln_1",
        mlp_norm="ln_2", attn="attn", out_proj="c_proj", mlp="mlp", qkv="c_attn", qkv_layout=QKVLayout("blocks"),
        conv1d=True,
    ),
    "gpt_neox": FamilyPaths(
        base="gpt_neox", embed="embed_in", pos_embed=None, layers="layers", final_norm="final_layer_norm",
        attn_norm="input_layernorm", mlp_norm="post_attention_layernorm", attn="attention", out_proj="dense",
        mlp="mlp", qkv="query_key_value", qkv_layout=QKVLayout("per_head"), parallel="use_parallel_residual",
    ),
    "gptj": FamilyPaths(
        base="transformer", embed="wte", pos_embed=None, layers="h", final_norm="ln_f", attn_norm="ln_1",
        mlp_norm="ln_1", attn="attn", out_proj="out_proj", mlp="mlp", q="q_proj", k="k_proj", v="v_proj",
        parallel="always",
    ),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": attrs.evolve(
        _LLAMA_LIKE, mlp_norm="pre_feedforward_layernorm", attn_out_norm="post_attention_layernorm",
        mlp_out="post_feedforward_layernorm",
    ),
}

# Families transformers has whose setting scrub does not implement yet: model_type -> the setting.
_REFUSED: dict[str, str] = {
    "gemma3": "post-norms (post_attention_layernorm / post_feedforward_layernorm) and q/k norms",
    "mixtral": "mixture-of-experts MLPs",
    "qwen2_moe": "mixture-of-experts MLPs",
    "qwen3_moe": "mixture-of-experts MLPs",
}
_MOE_ATTRS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def check_config(config: Any) -> FamilyPaths:
    """The paths of ``config``'s family, or `UnsupportedModelError` naming the family or setting.

    Raises:
        UnsupportedModelError: an unknown ``model_type``, a known family with an unsupported
            setting (post-norms, mixture of experts, cross-attention, ...).
    """
    model_type = getattr(config, "model_type", None)
    if model_type in _REFUSED:
        raise UnsupportedModelError(
            f"scrub does not support HuggingFace model_type {model_type!r} yet: its {_REFUSED[model_type]} "
            f"are not implemented; supported families: {sorted(FAMILIES)}"
        )
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"scrub supports the HuggingFace families {sorted(FAMILIES)}; got model_type {model_type!r}; "
            f"load a model of a supported family (or a TransformerLens HookedTransformer)"
        )
    for name in _MOE_ATTRS:
        if getattr(config, name, None) not in (None, 0, 1):
            raise UnsupportedModelError(
                f"scrub does not support mixture-of-experts MLPs: {model_type} config sets {name}="
                f"{getattr(config, name)!r}; use a dense model"
            )
    if getattr(config, "add_cross_attention", False) or getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"scrub scrubs decoder-only causal LMs; this {model_type} config adds cross-attention "
            f"(add_cross_attention / is_encoder_decoder); load the decoder-only model"
        )
    return FAMILIES[model_type]


@attrs.frozen(eq=False)
class LayerModules:
    """The live modules of one layer (``q``/``k``/``v`` None when the projection is fused;
    ``attn_out_norm`` and ``mlp_out`` None without post-norms)."""

    attn_norm: nn.Module
    mlp_norm: nn.Module
    attn: nn.Module
    out_proj: nn.Module
    mlp: nn.Module
    q: Optional[nn.Module]
    k: Optional[nn.Module]
    v: Optional[nn.Module]
    qkv: Optional[nn.Module]
    attn_out_norm: Optional[nn.Module] = None
    mlp_out: Optional[nn.Module] = None


@attrs.frozen(eq=False)
class HFModules:
    """A HuggingFace causal LM's modules and the sizes the hooks need."""

    model_type: str
    paths: FamilyPaths
    embed: nn.Module
    pos_embed: Optional[nn.Module]
    final_norm: nn.Module
    layers: tuple[LayerModules, ...]
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    parallel: bool  # attention and MLP of a layer read the same residual (GPT-J; GPT-NeoX by default)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def post_norms(self) -> bool:
        """Whether each layer normalises its attention's output (the sum of its heads) before
        adding it to the residual stream (Gemma-2)."""
        return self.paths.attn_out_norm is not None


def is_hf_model(model: Any) -> bool:
    """Whether ``model`` is a HuggingFace ``PreTrainedModel`` (without importing transformers eagerly)."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(model, PreTrainedModel)


def _get(root: nn.Module, path: str, model_type: str) -> nn.Module:
    module = root
    for part in path.split("."):
        if not hasattr(module, part):
            raise UnsupportedModelError(
                f"a {model_type} model is expected to have module {path!r} (transformers' modelling code), but "
                f"{type(root).__name__} has none; load it with AutoModelForCausalLM (a causal LM, not a base model)"
            )
        module = getattr(module, part)
    return module


def hf_modules(model: Any) -> HFModules:
    """Resolve the module paths of ``model``'s family (`check_config` first).

    Raises:
        UnsupportedModelError: unsupported family/setting, or a module missing where the family has it.
    """
    config = model.config
    paths = check_config(config)
    mt = config.model_type
    base = _get(model, paths.base, mt)
    layers = []
    for block in _get(base, paths.layers, mt):
        attn = _get(block, paths.attn, mt)
        sub = (lambda p: _get(attn, p, mt) if p is not None else None)
        layers.append(LayerModules(
            attn_norm=_get(block, paths.attn_norm, mt), mlp_norm=_get(block, paths.mlp_norm, mt), attn=attn,
            out_proj=_get(attn, paths.out_proj, mt), mlp=_get(block, paths.mlp, mt),
            q=sub(paths.q), k=sub(paths.k), v=sub(paths.v), qkv=sub(paths.qkv),
            attn_out_norm=_get(block, paths.attn_out_norm, mt) if paths.attn_out_norm else None,
            mlp_out=_get(block, paths.mlp_out, mt) if paths.mlp_out else None,
        ))
    n_heads = int(config.num_attention_heads)
    d_model = int(config.hidden_size)
    d_head = getattr(config, "head_dim", None) or d_model // n_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    parallel = paths.parallel == "always" or bool(paths.parallel and getattr(config, paths.parallel, False))
    return HFModules(
        model_type=mt, paths=paths, embed=_get(base, paths.embed, mt),
        pos_embed=_get(base, paths.pos_embed, mt) if paths.pos_embed else None,
        final_norm=_get(base, paths.final_norm, mt), layers=tuple(layers),
        n_heads=n_heads, n_kv_heads=int(n_kv), d_head=int(d_head), d_model=d_model, parallel=parallel,
    )
