"""`ModelShape`: what checking a hypothesis needs to know about a model, and nothing else."""

from __future__ import annotations

import attrs

from scrub.errors import HypothesisError

__all__ = ["ModelShape"]


@attrs.frozen
class ModelShape:
    """What validation needs to know about a model (read from a HookedTransformer or ModelView).

    Attributes:
        n_layers, n_heads, n_ctx: the model's size.
        attn_only: the model has no MLPs.
        shortformer: positions are added inside attention, not to the residual stream.
        parallel_blocks: attention and MLP of one layer read the same residual stream (GPT-J,
            GPT-NeoX): a head of layer ``l`` is then not upstream of the MLP of layer ``l``.
    """

    n_layers: int
    n_heads: int
    n_ctx: int
    attn_only: bool
    shortformer: bool = False
    parallel_blocks: bool = False

    @classmethod
    def of(cls, model) -> "ModelShape":
        """The shape of a TransformerLens model (``cfg``), a scrub ModelView (``config``) or itself."""
        if isinstance(model, ModelShape):
            return model
        cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
        if cfg is None:
            raise HypothesisError(
                f"cannot read the shape of {type(model).__name__}; pass a TransformerLens "
                f"HookedTransformer, a scrub ModelView or a ModelShape"
            )
        positional = getattr(cfg, "positional_embedding_type", getattr(cfg, "positional", "standard"))
        # TransformerLens says parallel_attn_mlp; a scrub ViewConfig says parallel_blocks
        parallel = getattr(cfg, "parallel_attn_mlp", None)
        parallel = getattr(cfg, "parallel_blocks", False) if parallel is None else parallel
        return cls(
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            n_ctx=cfg.n_ctx,
            attn_only=bool(cfg.attn_only),
            shortformer=positional == "shortformer",
            parallel_blocks=bool(parallel),
        )
