"""`ViewConfig`: the architecture of a model view, the checks that refuse what `scrub` can't run,
and the activation functions the view implements.

`config_from_hooked` reads a TransformerLens ``HookedTransformer`` and either returns the
`ViewConfig` the model view needs, or raises `UnsupportedModelError` naming the first setting
that changes the forward pass in a way the view does not implement. Every field of
``HookedTransformerConfig`` (TransformerLens 3.9) was classified: those that only add hooks,
control loading or initialisation, or only matter for settings refused here anyway are ignored;
every other one is either implemented (`ViewConfig` carries it) or must hold its default.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import attrs

from scrub.errors import UnsupportedModelError
from scrub.model.mlps import ACTIVATIONS, SUPPORTED_ACT_FNS
from scrub.model.norms import NORMALIZATIONS
from scrub.model.rotary import PAIRINGS

__all__ = ["ViewConfig", "config_from_hooked", "SUPPORTED_ACT_FNS", "ACTIVATIONS"]

_SUPPORTED_SUMMARY = (
    "scrub supports GPT-2-style pre-norm decoder blocks: LayerNorm ('LN'), folded LayerNorm "
    "('LNPre') or no normalisation, learned 'standard' or 'shortformer' positions, causal or "
    "bidirectional full attention (one key/value head per query head), ungated MLPs with act_fn in "
    f"{list(SUPPORTED_ACT_FNS)}, or attention-only models"
)


@attrs.frozen
class ViewConfig:
    """The architecture of a model view: sizes and the forward-pass settings `scrub` implements.

    ``attn_scale`` is the number attention scores are divided by (``sqrt(d_head)`` by default,
    ``1.0`` when the model has ``use_attn_scale=False``); ``layer_attn_scales`` is the divisor
    of each layer, which differs from ``attn_scale`` only for models with
    ``scale_attn_by_inverse_layer_idx`` (layer ``l`` divides by ``attn_scale * (l + 1)``).
    ``d_mlp`` and ``act_fn`` are ``None`` for attention-only models.

    The fields after ``layer_attn_scales`` select the pieces of modern families (their defaults
    are GPT-2's):

    * ``family``: where the view was read from (``"hooked_transformer"`` or a HuggingFace
      ``model_type``);
    * ``normalization``: one of `scrub.model.norms.NORMALIZATIONS`;
    * ``positional``: ``"standard"`` (learned, added to the residual stream), ``"shortformer"``
      (learned, added to the q/k inputs of heads) or ``"rotary"`` (``rotary_dim`` features of q
      and k rotated, ``rotary_base``, ``rotary_pairing`` ``"neox"`` or ``"gptj"``);
    * ``n_key_value_heads``: key/value heads (grouped-query attention when fewer than
      ``n_heads``; query head ``h`` reads key/value head ``h // (n_heads / n_key_value_heads)``);
    * ``gated_mlp``: ``act(x W_gate) * (x W_in)`` MLPs (SwiGLU, GeGLU);
    * ``parallel_blocks``: attention and MLP of a layer read the same residual stream;
    * ``post_norms``: a norm on the attention's and the MLP's output before they join the
      residual stream (Gemma-2); heads then do not write to the residual stream one by one;
    * ``attn_softcap`` / ``logit_softcap``: ``cap * tanh(x / cap)`` on attention scores / logits;
    * ``sliding_windows``: per layer, the window (a query sees keys ``q - w < k <= q``) or
      ``None``; empty: no layer has one;
    * ``attn_fp32``: attention scores computed from float32 queries and keys (GPT-J);
    * ``attn_eager``: attention computed with HuggingFace's eager formula (scores, mask, float32
      softmax, values) rather than ``scaled_dot_product_attention``; the same in exact
      arithmetic, chosen to round like a source model that runs eager attention;
    * ``embed_scale``: the factor the token embedding is multiplied by (Gemma's
      ``sqrt(d_model)``; already folded into ``ModelView.W_E``).
    """

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_mlp: Optional[int]
    d_vocab: int
    d_vocab_out: int
    n_ctx: int
    attn_only: bool
    positional: str  # "standard" | "shortformer" | "rotary"
    causal: bool
    normalization: Optional[str]  # see scrub.model.norms.NORMALIZATIONS
    act_fn: Optional[str]
    eps: float
    attn_scale: float
    layer_attn_scales: tuple[float, ...] = attrs.field(converter=tuple)
    family: str = "hooked_transformer"
    n_key_value_heads: Optional[int] = None
    rotary_dim: Optional[int] = None
    rotary_base: float = 10000.0
    rotary_pairing: str = "neox"
    gated_mlp: bool = False
    parallel_blocks: bool = False
    post_norms: bool = False
    attn_softcap: Optional[float] = None
    logit_softcap: Optional[float] = None
    sliding_windows: tuple[Optional[int], ...] = attrs.field(default=(), converter=tuple)
    attn_fp32: bool = False
    attn_eager: bool = False
    embed_scale: Optional[float] = None

    def __attrs_post_init__(self) -> None:
        if len(self.layer_attn_scales) != self.n_layers:
            raise ValueError(
                f"ViewConfig.layer_attn_scales needs one entry per layer ({self.n_layers}), "
                f"got {len(self.layer_attn_scales)}"
            )
        if self.sliding_windows and len(self.sliding_windows) != self.n_layers:
            raise ValueError(
                f"ViewConfig.sliding_windows needs one entry per layer ({self.n_layers}) or none, "
                f"got {len(self.sliding_windows)}"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"ViewConfig.n_key_value_heads={self.n_key_value_heads} must divide n_heads={self.n_heads}"
            )
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"ViewConfig.normalization={self.normalization!r}; known: {NORMALIZATIONS}")
        if self.positional not in ("standard", "shortformer", "rotary"):
            raise ValueError(f"ViewConfig.positional={self.positional!r}; known: standard, shortformer, rotary")
        if self.positional == "rotary":
            r = self.rotary_dim
            if r is None or r <= 0 or r % 2 or r > self.d_head or self.rotary_pairing not in PAIRINGS:
                raise ValueError(
                    f"a rotary ViewConfig needs an even rotary_dim in 2..d_head={self.d_head} and a "
                    f"pairing in {PAIRINGS}; got rotary_dim={r}, rotary_pairing={self.rotary_pairing!r}"
                )

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads per layer (``n_heads`` unless grouped-query attention)."""
        return self.n_heads if self.n_key_value_heads is None else self.n_key_value_heads

    @property
    def kv_group(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    def sliding_window(self, layer: int) -> Optional[int]:
        """The sliding window of ``layer`` (``None``: full attention)."""
        return self.sliding_windows[layer] if self.sliding_windows else None


def _refuse(setting: str, value: Any, why: str = "") -> UnsupportedModelError:
    detail = f" ({why})" if why else ""
    return UnsupportedModelError(
        f"unsupported model setting {setting}={value!r}{detail}. {_SUPPORTED_SUMMARY}. "
        f"Use a model without this setting, or pass the HuggingFace model itself (scrub reads "
        f"GPT-NeoX, GPT-J, Llama, Mistral, Qwen2, Gemma and Gemma-2 checkpoints directly)."
    )


def _softcap_on(cap: Optional[float]) -> bool:
    # TransformerLens: a soft cap is active only for a strictly positive value.
    return cap is not None and cap > 0


# Settings that must keep their "off" value: (field, predicate "value is fine", explanation).
_MUST_BE_OFF: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("n_devices", lambda v: v in (None, 1), "the model is split over several devices"),
    ("load_in_4bit", lambda v: not v, "4-bit quantised weights"),
    ("gated_mlp", lambda v: not v, "gated MLPs are not supported yet"),
    ("num_experts", lambda v: not v, "mixture-of-experts MLPs are not supported"),
    ("parallel_attn_mlp", lambda v: not v, "parallel attention and MLP (GPT-J style)"),
    (
        "use_normalization_before_and_after",
        lambda v: not v,
        "normalisation after each block (Gemma-2 style)",
    ),
    ("attn_scores_soft_cap", lambda v: not _softcap_on(v), "soft-capped attention scores"),
    ("output_logits_soft_cap", lambda v: not _softcap_on(v), "soft-capped logits"),
    ("use_qk_norm", lambda v: not v, "qk-norm"),
    ("clip_qkv", lambda v: v is None, "clamped q/k/v activations"),
    ("use_logn_attn", lambda v: not v, "log-n query scaling"),
    ("use_attention_sinks", lambda v: not v, "attention sinks"),
    ("use_local_attn", lambda v: not v, "local / sliding-window attention"),
    (
        "attn_types",
        lambda v: v is None or all(t == "global" for t in v),
        "local / sliding-window attention layers",
    ),
    ("post_embedding_ln", lambda v: not v, "LayerNorm after the embedding"),
    ("final_rms", lambda v: not v, "RMSNorm as the final normalisation"),
)

# Architectures TransformerLens runs with a post-norm block or with q/k norms.
_REFUSED_ARCHITECTURES = frozenset({"Olmo2ForCausalLM", "Olmo3ForCausalLM", "OlmoeForCausalLM"})


def _check_cfg(cfg: Any) -> None:
    """Raise `UnsupportedModelError` for the first configuration setting the view can't run."""
    pos = cfg.positional_embedding_type
    if pos not in ("standard", "shortformer"):
        raise _refuse(
            "positional_embedding_type", pos, "only 'standard' and 'shortformer' are supported"
        )
    if cfg.attention_dir not in ("causal", "bidirectional"):
        raise _refuse("attention_dir", cfg.attention_dir, "use 'causal' or 'bidirectional'")
    if cfg.normalization_type not in ("LN", "LNPre", None):
        raise _refuse(
            "normalization_type",
            cfg.normalization_type,
            "only 'LN', 'LNPre' and None are supported; RMSNorm comes later",
        )
    n_kv = getattr(cfg, "n_key_value_heads", None)
    if n_kv is not None and n_kv != cfg.n_heads:
        raise _refuse(
            "n_key_value_heads",
            n_kv,
            f"grouped-query attention; only n_key_value_heads=None or = n_heads ({cfg.n_heads})",
        )
    for name, ok, why in _MUST_BE_OFF:
        value = getattr(cfg, name, None)
        if not ok(value):
            raise _refuse(name, value, why)
    if getattr(cfg, "original_architecture", None) in _REFUSED_ARCHITECTURES:
        raise _refuse(
            "original_architecture",
            cfg.original_architecture,
            "post-norm blocks and q/k norms of the OLMo family",
        )
    if not cfg.attn_only and cfg.act_fn not in SUPPORTED_ACT_FNS:
        raise _refuse("act_fn", cfg.act_fn, f"supported: {list(SUPPORTED_ACT_FNS)}")


def _check_modules(model: Any, cfg: Any) -> None:
    """Check the model's modules are the plain ones the configuration promises.

    TransformerLens may swap modules after construction (``fold_ln`` turns ``LayerNorm`` into
    ``LayerNormPre``); a module of an unexpected class means weights or semantics the view
    would silently miss, so it is refused.
    """
    from torch import nn
    from transformer_lens.components import (
        Attention,
        GroupedQueryAttention,
        LayerNorm,
        LayerNormPre,
    )
    from transformer_lens.components.mlps.mlp import MLP

    norm_cls = {"LN": LayerNorm, "LNPre": LayerNormPre, None: nn.Identity}[cfg.normalization_type]
    norms = [("ln_final", getattr(model, "ln_final", None))] if cfg.normalization_type else []
    for i, block in enumerate(model.blocks):
        norms.append((f"blocks.{i}.ln1", block.ln1))
        if not cfg.attn_only:
            norms.append((f"blocks.{i}.ln2", block.ln2))
        attn = block.attn
        if type(attn) not in (Attention, GroupedQueryAttention):
            raise _refuse(f"blocks.{i}.attn", type(attn).__name__, "unknown attention module")
        if getattr(attn, "attn_type", "global") != "global":
            raise _refuse(f"blocks.{i}.attn.attn_type", attn.attn_type, "local attention")
        if getattr(attn, "_attention_dir_override", None) is not None:
            raise _refuse(
                f"blocks.{i}.attn._attention_dir_override",
                attn._attention_dir_override,
                "per-layer attention direction",
            )
        if not cfg.attn_only and type(block.mlp) is not MLP:
            raise _refuse(f"blocks.{i}.mlp", type(block.mlp).__name__, "only the plain MLP")
    for name, module in norms:
        if type(module) is not norm_cls:
            raise _refuse(
                name,
                type(module).__name__,
                f"normalization_type={cfg.normalization_type!r} promises {norm_cls.__name__}",
            )


def config_from_hooked(model: Any) -> ViewConfig:
    """Read a ``HookedTransformer``'s architecture, refusing what the model view can't run.

    Raises:
        UnsupportedModelError: ``model`` is not a ``HookedTransformer``, or it uses a setting
            that changes the forward pass and is not implemented (the message names it).
    """
    from scrub.tlcompat import require_hooked_transformer

    HookedTransformer = require_hooked_transformer("ModelView.from_hooked (a TransformerLens model's view)")
    if not isinstance(model, HookedTransformer):
        raise UnsupportedModelError(
            f"scrub reads models from a transformer_lens.HookedTransformer, got "
            f"{type(model).__name__}; load the model as a HookedTransformer (TransformerLens 3.x)"
        )
    cfg = model.cfg
    _check_cfg(cfg)
    _check_modules(model, cfg)
    use_scale = getattr(cfg, "use_attn_scale", True)
    attn_scale = float(cfg.attn_scale) if use_scale else 1.0
    # The attention modules hold the divisor they use (including 1/(layer+1) scaling).
    layer_scales = tuple(float(block.attn.attn_scale) for block in model.blocks)
    for scale in layer_scales:
        if not math.isfinite(scale) or scale == 0:
            raise _refuse("attn_scale", scale, "must be a finite non-zero number")
    return ViewConfig(
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        d_mlp=None if cfg.attn_only else cfg.d_mlp,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab_out,
        n_ctx=cfg.n_ctx,
        attn_only=bool(cfg.attn_only),
        positional=cfg.positional_embedding_type,
        causal=cfg.attention_dir == "causal",
        normalization=cfg.normalization_type,
        act_fn=None if cfg.attn_only else cfg.act_fn,
        eps=float(cfg.eps),
        attn_scale=attn_scale,
        layer_attn_scales=layer_scales,
    )
