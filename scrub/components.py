"""Typed addresses of model components, their ports, and TransformerLens hook names.

A component is something that writes into the residual stream (an attention head, an MLP,
the token or position embedding) or reads it at the end (the output). Components read the
residual stream through *ports*: a head through ``q``, ``k`` and ``v``; an MLP and the output
through ``in``.

This module is the only place in `scrub` that builds TransformerLens hook-name strings.
"""

from __future__ import annotations

from typing import Union

import attrs

from scrub.errors import ComponentError

Port = str
HEAD_PORTS: tuple[Port, ...] = ("q", "k", "v")
IN_PORTS: tuple[Port, ...] = ("in",)


def _non_negative(instance, attribute, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ComponentError(
            f"{type(instance).__name__}.{attribute.name} must be a non-negative int, got {value!r}; "
            f"write e.g. Head(1, 2) for head 2 of layer 1"
        )


@attrs.frozen(order=False)
class Head:
    """Output of attention head ``head`` of layer ``layer`` (its ``z @ W_O``, without ``b_O``)."""

    layer: int = attrs.field(validator=_non_negative)
    head: int = attrs.field(validator=_non_negative)

    ports = HEAD_PORTS

    def __str__(self) -> str:
        return f"Head({self.layer}.{self.head})"

    @property
    def stage(self) -> int:
        """Order in the residual stream: embeddings 0, head of layer l 2l+1, MLP of layer l 2l+2."""
        return 2 * self.layer + 1


@attrs.frozen
class MLP:
    """Output of the MLP of layer ``layer`` (after its LayerNorm, including ``b_out``)."""

    layer: int = attrs.field(validator=_non_negative)

    ports = IN_PORTS

    def __str__(self) -> str:
        return f"MLP({self.layer})"

    @property
    def stage(self) -> int:
        return 2 * self.layer + 2


@attrs.frozen
class Embed:
    """The token embedding ``W_E[token]``."""

    ports = ()

    def __str__(self) -> str:
        return "Embed"

    @property
    def stage(self) -> int:
        return 0


@attrs.frozen
class PosEmbed:
    """The learned positional embedding ``W_pos[position]`` added to the residual stream."""

    ports = ()

    def __str__(self) -> str:
        return "PosEmbed"

    @property
    def stage(self) -> int:
        return 0


@attrs.frozen
class Output:
    """The model output: final LayerNorm and unembedding of the last residual stream."""

    ports = IN_PORTS

    def __str__(self) -> str:
        return "Output"

    def stage_for(self, n_layers: int) -> int:
        return 2 * n_layers + 1


Component = Union[Head, MLP, Embed, PosEmbed, Output]
WRITERS = (Head, MLP, Embed, PosEmbed)


def stage(component: Component, n_layers: int, parallel_blocks: bool = False) -> int:
    """Position of ``component`` in the order the residual stream is built.

    Embeddings are 0, the heads of layer ``l`` ``2l+1``, its MLP ``2l+2``, the output last. With
    ``parallel_blocks`` (GPT-J / GPT-NeoX: attention and MLP of one layer both read the layer's
    input residual stream) the MLP of layer ``l`` shares its heads' stage ``2l+1``.
    """
    if isinstance(component, Output):
        return component.stage_for(n_layers)
    if parallel_blocks and isinstance(component, MLP):
        return 2 * component.layer + 1
    return component.stage


def is_upstream(child: Component, parent: Component, n_layers: int, parallel_blocks: bool = False) -> bool:
    """Whether ``child``'s output is part of the residual stream that ``parent`` reads."""
    return stage(child, n_layers, parallel_blocks) < stage(parent, n_layers, parallel_blocks)


def ports_of(component: Component) -> tuple[Port, ...]:
    """The ports through which ``component`` reads the residual stream."""
    return tuple(component.ports)


# --------------------------------------------------------------------------------------------
# TransformerLens hook names: built here and nowhere else.
# --------------------------------------------------------------------------------------------


class hooks:
    """TransformerLens (``HookedTransformer``) hook names, grouped in one namespace."""

    @staticmethod
    def embed() -> str:
        return "hook_embed"

    @staticmethod
    def pos_embed() -> str:
        return "hook_pos_embed"

    @staticmethod
    def resid_pre(layer: int) -> str:
        return f"blocks.{layer}.hook_resid_pre"

    @staticmethod
    def resid_mid(layer: int) -> str:
        return f"blocks.{layer}.hook_resid_mid"

    @staticmethod
    def resid_post(layer: int) -> str:
        return f"blocks.{layer}.hook_resid_post"

    @staticmethod
    def head_input(layer: int, port: Port) -> str:
        """Per-head input of a head port: ``[batch, pos, n_heads, d_model]`` (needs split qkv)."""
        return f"blocks.{layer}.hook_{port}_input"

    @staticmethod
    def head_result(layer: int) -> str:
        """Per-head output ``[batch, pos, n_heads, d_model]`` (needs ``use_attn_result``)."""
        return f"blocks.{layer}.attn.hook_result"

    @staticmethod
    def head_z(layer: int) -> str:
        return f"blocks.{layer}.attn.hook_z"

    @staticmethod
    def mlp_in(layer: int) -> str:
        """Input of the MLP block before ``ln2`` (needs ``use_hook_mlp_in``)."""
        return f"blocks.{layer}.hook_mlp_in"

    @staticmethod
    def mlp_out(layer: int) -> str:
        return f"blocks.{layer}.hook_mlp_out"

    @staticmethod
    def final_resid(n_layers: int) -> str:
        """The residual stream the output reads: the last block's ``resid_post``."""
        return f"blocks.{n_layers - 1}.hook_resid_post"

    @staticmethod
    def output_of(component: Component) -> str:
        """Hook whose value is ``component``'s contribution to the residual stream."""
        if isinstance(component, Embed):
            return hooks.embed()
        if isinstance(component, PosEmbed):
            return hooks.pos_embed()
        if isinstance(component, Head):
            return hooks.head_result(component.layer)
        if isinstance(component, MLP):
            return hooks.mlp_out(component.layer)
        raise ComponentError(
            f"{component} does not write into the residual stream, so it has no output hook; "
            f"only Head, MLP, Embed and PosEmbed do"
        )


__all__ = [
    "Head",
    "MLP",
    "Embed",
    "PosEmbed",
    "Output",
    "Component",
    "Port",
    "HEAD_PORTS",
    "IN_PORTS",
    "WRITERS",
    "stage",
    "is_upstream",
    "ports_of",
    "hooks",
]
