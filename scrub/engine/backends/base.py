"""What every hook backend shares: the `Patch` triple, the `HookBackend` interface and the
component check (see `scrub.engine.backends`)."""

from __future__ import annotations

import contextlib
from typing import Protocol, Sequence

import torch
from torch import Tensor

from scrub.components import MLP, Component, Head, PosEmbed
from scrub.errors import ScheduleError

__all__ = ["HookBackend", "Patch", "check_component"]

Patch = tuple[Component, str, Tensor]  # (component, port, delta [n, pos, d_model])


class HookBackend(Protocol):
    """What the reference engine needs from a model (see the module docstring)."""

    n_layers: int
    device: torch.device
    post_norms: bool  # the attention's output is normalised after its heads are summed (Gemma-2)

    def check(self, component: Component) -> None: ...

    def session(self) -> contextlib.AbstractContextManager: ...

    def run(self, tokens: Tensor, reads: Sequence[Component], patches: Sequence[Patch] = ()) -> dict[Component, Tensor]: ...

    def logits(self, tokens: Tensor) -> Tensor: ...

    def attention_sums(self, tokens: Tensor, layers: Sequence[int]) -> dict[int, Tensor]: ...

    def attn_write(self, layer: int, heads_sum: Tensor) -> Tensor: ...


def check_component(component: Component, n_layers: int, n_heads: int, has_mlp: bool, has_pos: bool, model: str) -> None:
    """Refuse ``component`` when the model (described by the sizes given, named ``model``) lacks it.

    Raises:
        ScheduleError: a layer or head out of range, an MLP in an attention-only model, a
            position embedding in a model without a learned one.
    """
    bad = None
    if isinstance(component, (Head, MLP)) and component.layer >= n_layers:
        bad = f"layer {component.layer} (the model has layers 0..{n_layers - 1})"
    elif isinstance(component, Head) and component.head >= n_heads:
        bad = f"head {component.head} (the model has heads 0..{n_heads - 1})"
    elif isinstance(component, MLP) and not has_mlp:
        bad = "an MLP (the model is attention-only)"
    elif isinstance(component, PosEmbed) and not has_pos:
        bad = "a learned position embedding (the model has none)"
    if bad is not None:
        raise ScheduleError(
            f"schedule component {component} does not fit {model}: it names {bad}; "
            f"claim only components the model has"
        )
