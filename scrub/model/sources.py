"""Where a model view comes from: dispatch on the kind of model.

`config_from_model` reads the architecture of a TransformerLens ``HookedTransformer`` or of a
HuggingFace causal LM without copying weights (other code uses it for shapes);
`weights_from_model` copies the weights. Post-norm models (Gemma-2) need no refusal here: the
engines, the report and patching re-normalise a layer's head sum where they change it
(docs/post-norms.md).
"""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

from scrub.errors import UnsupportedModelError
from scrub.model.config import ViewConfig, config_from_hooked
from scrub.model.weights import weights_from_hooked

__all__ = ["config_from_model", "weights_from_model", "is_transformer_lens", "is_source_model", "model_name"]


def _is_hooked(model: Any) -> bool:
    try:
        from transformer_lens import HookedTransformer
    except ImportError:  # pragma: no cover - TransformerLens is a dependency
        return False
    return isinstance(model, HookedTransformer)


def is_transformer_lens(model: Any) -> bool:
    """A TransformerLens ``HookedTransformer`` (3.x) or ``TransformerBridge`` (3.9's and 4.x's), by class."""
    names = {cls.__name__ for cls in type(model).__mro__}
    module = type(model).__module__ or ""
    return module.startswith("transformer_lens") and bool(names & {"HookedTransformer", "TransformerBridge"})


def is_source_model(model: Any) -> bool:
    """A model ``scrub`` can be handed: a TransformerLens model or a HuggingFace causal LM."""
    return is_transformer_lens(model) or _is_hf(model)


def model_name(model: Any) -> str:
    """A readable name for reports: TransformerLens's ``model_name``, the HF checkpoint's name or path,
    else the class name."""
    cfg = getattr(model, "cfg", None)
    name = getattr(cfg, "model_name", None) if cfg is not None else None
    if not name and _is_hf(model):
        name = getattr(model.config, "name_or_path", None) or getattr(model.config, "model_type", None)
    return str(name or type(model).__name__)


def _is_hf(model: Any) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PreTrainedModel)


def unwrap_bridge(model: Any) -> Any:
    """A TransformerLens ``TransformerBridge`` as the plain HuggingFace model it wraps (sharing its
    tensors; `scrub.model.bridge.hf_model_of_bridge`); any other model as it is."""
    from scrub.model.bridge import hf_model_of_bridge, is_bridge

    return hf_model_of_bridge(model) if is_bridge(model) else model


def config_from_model(model: Any) -> ViewConfig:
    """The `ViewConfig` of a ``HookedTransformer`` or a HuggingFace causal LM (no weights copied).

    Raises:
        UnsupportedModelError: another kind of object, an unknown family, or a setting the view
            does not implement (the message names it).
    """
    model = unwrap_bridge(model)
    if _is_hooked(model):
        return config_from_hooked(model)
    if _is_hf(model):
        from scrub.model.hf_config import config_from_hf

        config = config_from_hf(model)
        _check_dtypes(model)
        return config
    raise UnsupportedModelError(
        f"scrub reads a transformer_lens.HookedTransformer or a transformers PreTrainedModel "
        f"(a *ForCausalLM), got {type(model).__name__}; load the model as one of them"
    )


def _check_dtypes(model: Any) -> None:
    dtypes = {p.dtype for p in model.parameters()}
    devices = {p.device for p in model.parameters()}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise UnsupportedModelError(
            f"unsupported model setting: parameter dtypes {sorted(map(str, dtypes))} (the view needs one "
            f"floating dtype for every weight); cast the model with model.to(dtype)"
        )
    if len(devices) != 1:
        raise UnsupportedModelError(
            f"unsupported model setting: parameters on devices {sorted(map(str, devices))} (the view "
            f"needs one device); move the model with model.to(device)"
        )


def weights_from_model(model: Any, config: ViewConfig) -> dict[str, Optional[Tensor]]:
    """Detached copies of the weights of ``model`` (as read into ``config``), by `ModelView` field."""
    model = unwrap_bridge(model)
    if config.family == "hooked_transformer":
        return weights_from_hooked(model, config)
    from scrub.model.hf_weights import weights_from_hf

    return weights_from_hf(model, config)
