"""Hook backends of the reference engine: run a source model with hooks, in terms of components and ports.

The reference engine (`scrub.engine.reference`) evaluates a schedule's tree one node at a time;
everything it asks of the model goes through a backend with one small interface:

* ``run(tokens, reads, patches)``: one forward pass on ``tokens`` ``[n, pos]`` in which each
  ``(component, port, delta)`` of ``patches`` adds ``delta`` ``[n, pos, d_model]`` to that
  component's port input (the residual stream the port reads); returns the output of every
  component in ``reads`` from that same pass (``[n, pos, d_model]``; the logits for `Output`);
* ``logits(tokens)``: the unpatched logits;
* ``check(component)``: refuse a component the model does not have (before any forward pass);
* ``session()``: a context to run a schedule in (TransformerLens: per-head hooks switched on,
  settings restored after).

Two backends, chosen from the model's type by `backend_for`; anything else is refused with
`UnsupportedModelError` naming the type:

`TransformerLensBackend` (``HookedTransformer``; written against hook names only, so a
TransformerLens 4 ``TransformerBridge`` whose per-head hooks fire works too) reads ``hook_embed``,
``hook_pos_embed``, ``attn.hook_result`` (one head's slice), ``hook_mlp_out``, and adds deltas
at ``hook_{q,k,v}_input`` (one head's slice), ``hook_mlp_in`` and the last ``hook_resid_post``.

`HuggingFaceBackend` (plain HF causal LMs of the families in `scrub.model.hf_modules`) uses
PyTorch forward hooks and pre-hooks on the HF modules; its semantics are in `scrub.engine.backends.hf`.
Neither backend reads the model view: the reference engine stays an independent check of it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor

from scrub.components import MLP, Component, Head, PosEmbed
from scrub.errors import ScheduleError, UnsupportedModelError

__all__ = ["HookBackend", "Patch", "backend_for", "check_component"]

Patch = tuple[Component, str, Tensor]  # (component, port, delta [n, pos, d_model])


class HookBackend(Protocol):
    """What the reference engine needs from a model (see the module docstring)."""

    n_layers: int
    device: torch.device

    def check(self, component: Component) -> None: ...

    def session(self) -> contextlib.AbstractContextManager: ...

    def run(self, tokens: Tensor, reads: Sequence[Component], patches: Sequence[Patch] = ()) -> dict[Component, Tensor]: ...

    def logits(self, tokens: Tensor) -> Tensor: ...


def _is_transformer_lens(model: Any) -> bool:
    """A TransformerLens ``HookedTransformer`` (3.x) or ``TransformerBridge`` (4.x), by class."""
    names = {cls.__name__ for cls in type(model).__mro__}
    module = type(model).__module__ or ""
    return module.startswith("transformer_lens") and bool(names & {"HookedTransformer", "TransformerBridge"})


def backend_for(model: Any) -> HookBackend:
    """The hook backend for ``model``: TransformerLens hooks or HuggingFace module hooks.

    Raises:
        UnsupportedModelError: ``model`` is neither a TransformerLens model nor a HuggingFace
            causal LM of a supported family (or it uses an unsupported setting).
    """
    if _is_transformer_lens(model):
        from scrub.engine.backends.tl import TransformerLensBackend

        return TransformerLensBackend(model)
    from scrub.model.hf_modules import is_hf_model

    if is_hf_model(model):
        from scrub.engine.backends.hf import HuggingFaceBackend

        return HuggingFaceBackend(model)
    raise UnsupportedModelError(
        f"the reference engine runs TransformerLens models (HookedTransformer, TransformerBridge) and "
        f"HuggingFace causal LMs; got {type(model).__module__}.{type(model).__name__}; load the model with "
        f"scrub.load_model or transformers.AutoModelForCausalLM"
    )


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
