"""`ModelShape`: what checking a hypothesis needs to know about a model, and nothing else."""

from __future__ import annotations

from typing import Any

import attrs

from scrub.components import MLP, Component, Embed, Head, PosEmbed, stage
from scrub.errors import HypothesisError, UnsupportedModelError

__all__ = ["ModelShape", "POSITIONALS"]

#: How positions enter a model: learned vectors added to the residual stream (``"standard"``),
#: learned vectors added to the normalised q/k inputs of every head (``"shortformer"``), or a
#: rotation of queries and keys (``"rotary"``; TransformerLens also names ``"alibi"``). Only
#: ``"standard"`` positions are a ``PosEmbed()`` component.
POSITIONALS = ("standard", "shortformer", "rotary")


@attrs.frozen
class ModelShape:
    """What validation needs to know about a model.

    Read by `ModelShape.of` from a TransformerLens model (``cfg``), a scrub ModelView
    (``config``) or a HuggingFace causal LM (through `scrub.model.config_from_model`, which
    reads the config only: no weight is copied).

    Attributes:
        n_layers, n_heads, n_ctx: the model's size (``n_heads`` counts query heads).
        attn_only: the model has no MLPs.
        shortformer: positions are added inside attention, not to the residual stream (the
            same as ``positional="shortformer"``; kept for callers that say so).
        parallel_blocks: attention and MLP of one layer read the same residual stream (GPT-J,
            GPT-NeoX): a head of layer ``l`` is then not upstream of the MLP of layer ``l``.
        positional: how positions enter the model (`POSITIONALS`; by default from
            ``shortformer``); only ``"standard"`` positions are a component (``PosEmbed()``)
            of the residual stream.
    """

    n_layers: int
    n_heads: int
    n_ctx: int
    attn_only: bool
    shortformer: bool = False
    parallel_blocks: bool = False
    positional: str = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        if self.positional is None:
            object.__setattr__(self, "positional", "shortformer" if self.shortformer else "standard")
        elif self.shortformer != (self.positional == "shortformer"):
            raise HypothesisError(
                f"rule: ModelShape's shortformer and positional must agree; offender: "
                f"shortformer={self.shortformer}, positional={self.positional!r}; fix: give one of them"
            )

    @property
    def has_pos_embed(self) -> bool:
        """The model has a ``PosEmbed()`` component (learned positions in the residual stream)."""
        return self.positional == "standard"

    def writers(self) -> list[Component]:
        """Every component that writes into the residual stream, upstream first (by
        `scrub.components.stage`): the embeddings, then each layer's heads and MLP."""
        found: list[Component] = [Embed()] + ([PosEmbed()] if self.has_pos_embed else [])
        for layer in range(self.n_layers):
            found.extend(Head(layer, h) for h in range(self.n_heads))
            if not self.attn_only:
                found.append(MLP(layer))
        return sorted(found, key=lambda c: stage(c, self.n_layers, self.parallel_blocks))

    @classmethod
    def of(cls, model: Any) -> "ModelShape":
        """The shape of ``model``: a ModelShape, a TransformerLens model (``cfg``: a
        ``HookedTransformer`` or a ``TransformerBridge``), a scrub ModelView or ViewConfig, or
        anything `scrub.model.config_from_model` reads (a HuggingFace causal LM).

        Raises:
            HypothesisError: an object none of these reads.
            UnsupportedModelError: a HuggingFace model of a family or setting scrub does not
                support (the message names it).
        """
        if isinstance(model, ModelShape):
            return model
        from scrub.model import ViewConfig, config_from_model

        if isinstance(model, ViewConfig):
            return cls._of_config(model)
        cfg = getattr(model, "cfg", None)
        if cfg is not None and hasattr(cfg, "n_layers"):  # TransformerLens
            return cls._of_config(cfg)
        view_config = getattr(model, "config", None)
        from_hf = type(view_config).__module__.startswith("transformers")
        if isinstance(view_config, ViewConfig) or (not from_hf and hasattr(view_config, "n_layers")):  # a ModelView
            return cls._of_config(view_config)
        try:
            return cls._of_config(config_from_model(model))
        except UnsupportedModelError:
            if view_config is not None:  # a model of some kind: its own refusal says why
                raise
            raise HypothesisError(
                f"rule: a hypothesis is checked against a model's shape; offender: cannot read the "
                f"shape of {type(model).__name__}; fix: pass a TransformerLens HookedTransformer or "
                f"TransformerBridge, a HuggingFace causal LM, a scrub ModelView or a ModelShape"
            ) from None

    @classmethod
    def _of_config(cls, cfg: Any) -> "ModelShape":
        """From a TransformerLens config or a scrub `ViewConfig` (their field names differ)."""
        positional = getattr(cfg, "positional_embedding_type", None) or getattr(cfg, "positional", "standard")
        # TransformerLens says parallel_attn_mlp; a scrub ViewConfig says parallel_blocks
        parallel = getattr(cfg, "parallel_attn_mlp", None)
        parallel = getattr(cfg, "parallel_blocks", False) if parallel is None else parallel
        return cls(
            n_layers=int(cfg.n_layers),
            n_heads=int(cfg.n_heads),
            n_ctx=int(cfg.n_ctx),
            attn_only=bool(cfg.attn_only),
            shortformer=positional == "shortformer",
            parallel_blocks=bool(parallel),
            positional=str(positional),
        )
