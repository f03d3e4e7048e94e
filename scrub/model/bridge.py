"""TransformerLens 3 and 4 side by side: which model classes exist, and a bridge's HuggingFace model.

TransformerLens 4 removed ``HookedTransformer`` (and ``HookedTransformerConfig``, ``components``,
``loading_from_pretrained``); its models are ``TransformerBridge``s that wrap a HuggingFace model.
`scrub` supports both lines:

* (re-exported from `scrub.tlcompat`, the ground layer) `hooked_transformer_available` says
  whether this TransformerLens has ``HookedTransformer``; `require_hooked_transformer` returns the
  class or raises `NeedsHookedTransformerError`, which names the fix;
* `is_bridge` recognises a ``TransformerBridge`` by class (without importing TransformerLens);
  on the reference engine it runs through the TransformerLens backend (its hook names fire);
* `hf_model_of_bridge` gives the plain HuggingFace causal LM behind a bridge, for the model view
  (``ModelView.from_model``) and the HuggingFace hook backend. A bridge replaces its HF model's
  submodules in place with bridge components, so ``bridge.original_model`` no longer runs the HF
  modules' own forwards; the returned model is a fresh instance of the same class whose
  parameters and buffers ARE the bridge's tensors (shared, not copied).
"""

from __future__ import annotations

import re
from typing import Any

from scrub.errors import UnsupportedModelError
from scrub.tlcompat import (
    NeedsHookedTransformerError,
    hooked_transformer_available,
    require_hooked_transformer,
    transformer_lens_version,
)

__all__ = [
    "NeedsHookedTransformerError",
    "hooked_transformer_available",
    "require_hooked_transformer",
    "transformer_lens_version",
    "is_bridge",
    "hf_model_of_bridge",
]


def is_bridge(model: Any) -> bool:
    """Whether ``model`` is a TransformerLens ``TransformerBridge`` (by class; imports nothing)."""
    return any(
        cls.__name__ == "TransformerBridge" and (cls.__module__ or "").startswith("transformer_lens")
        for cls in type(model).__mro__
    )


_WRAPPER = re.compile(r"(^|\.)_original_component(?=\.|$)")


def _plain_name(name: str) -> str:
    """A bridged module-tree name with the bridge wrappers removed (HF's own dotted path)."""
    return _WRAPPER.sub("", name).lstrip(".")


def hf_model_of_bridge(bridge: Any):
    """The plain HuggingFace causal LM behind a ``TransformerBridge`` (weights shared, not copied).

    The result is a new instance of the bridge's HF model class, built on the meta device (no
    initialisation, no RNG use) from a copy of its config, whose parameters and buffers are then
    set to the bridge's own tensors, found under their HF names once the bridge wrappers
    (``_original_component``) are taken out of the bridged names. It is in eval mode and carries
    the bridge's tokenizer as ``.tokenizer`` when the bridge has one.

    Raises:
        UnsupportedModelError: ``bridge`` is not a TransformerBridge; it wraps no HuggingFace
            ``PreTrainedModel`` (e.g. ``boot_native``); its weights were processed by
            ``enable_compatibility_mode()`` (folded/centred, so the HF tensors inside are stale);
            or a parameter of the HF model cannot be found (or is ambiguous) inside the bridge.
    """
    import copy

    import torch

    if not is_bridge(bridge):
        raise UnsupportedModelError(
            f"hf_model_of_bridge() takes a TransformerLens TransformerBridge, got {type(bridge).__name__}; "
            f"pass the bridge itself (HuggingFace models need no unwrapping)"
        )
    if getattr(bridge, "_weights_processed", False):
        raise UnsupportedModelError(
            "this TransformerBridge's weights were processed (enable_compatibility_mode() folds LayerNorms and "
            "centres weights in the bridge, not in the HuggingFace modules inside it), so its HuggingFace model "
            "is stale; pass a bridge without weight processing (enable_compatibility_mode(no_processing=True) "
            "or none at all)"
        )
    original = bridge.__dict__.get("original_model")
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - a dependency
        PreTrainedModel = ()
    if original is None or not isinstance(original, PreTrainedModel):
        raise UnsupportedModelError(
            f"this TransformerBridge wraps {type(original).__name__}, not a HuggingFace PreTrainedModel (a "
            f"boot_native bridge has none); build the bridge with TransformerBridge.boot_transformers(local_dir), "
            f"or pass the HuggingFace model itself"
        )
    tensors: dict[str, list[torch.Tensor]] = {}
    for name, p in original.named_parameters(remove_duplicate=False):
        tensors.setdefault(_plain_name(name), []).append(p)
    for name, b in original.named_buffers(remove_duplicate=False):
        tensors.setdefault(_plain_name(name), []).append(b)

    with torch.device("meta"):
        plain = type(original)(copy.deepcopy(original.config))
    for kind, named in (("parameter", plain.named_parameters(remove_duplicate=False)),
                        ("buffer", plain.named_buffers(remove_duplicate=False))):
        for name, _ in list(named):
            found = tensors.get(name)
            if not found:
                raise UnsupportedModelError(
                    f"the HuggingFace {type(original).__name__} behind this TransformerBridge has no {kind} "
                    f"{name!r} under the bridge's wrappers; the bridge's adapter lays the model out differently "
                    f"from transformers' {type(original).__name__}; pass the HuggingFace model itself"
                )
            first = found[0]
            if any(t is not first and not torch.equal(t, first) for t in found[1:]):
                raise UnsupportedModelError(
                    f"the TransformerBridge holds {len(found)} different tensors for the HuggingFace {kind} "
                    f"{name!r}; it was edited through one alias only; pass the HuggingFace model itself"
                )
            owner, _, leaf = name.rpartition(".")
            module = plain.get_submodule(owner) if owner else plain
            if kind == "parameter":
                value = first if isinstance(first, torch.nn.Parameter) else torch.nn.Parameter(first, requires_grad=False)
                module._parameters[leaf] = value
            else:
                module._buffers[leaf] = first
    leftover = [n for n, t in list(plain.named_parameters()) + list(plain.named_buffers()) if t.is_meta]
    if leftover:  # pragma: no cover - every name was set above
        raise UnsupportedModelError(f"hf_model_of_bridge(): tensors {leftover[:5]} were not found in the bridge")
    tokenizer = getattr(bridge, "tokenizer", None)
    if tokenizer is not None:
        plain.tokenizer = tokenizer
    return plain.eval()
