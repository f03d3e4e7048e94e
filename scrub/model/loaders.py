"""Loading models to scrub: zoo models, pretrained models by name, and local HuggingFace models.

``load_model("induction-2l")`` returns a zoo model (shipped weights, no download);
``load_model("gpt2")`` goes through ``HookedTransformer.from_pretrained`` (downloads on first use,
so it needs the internet once); ``from_hf(hf_model)`` converts a GPT-2-architecture HuggingFace
model you already hold (e.g. loaded from a local directory with ``from_pretrained(path)``).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from scrub.errors import UnsupportedModelError

__all__ = ["load_model", "from_hf"]


def load_model(name: str, *, device: Optional[Any] = None, **from_pretrained_kwargs):
    """A ``HookedTransformer`` by name: a zoo model if ``name`` is one, else a pretrained model.

    Pretrained models load with TransformerLens's defaults (LayerNorm folded, weights centred),
    which ``scrub`` supports; pass ``fold_ln=False`` etc. to change them.
    """
    from scrub import zoo

    if name in zoo.available():
        return zoo.load(name, device=device)
    from transformer_lens import HookedTransformer

    model = HookedTransformer.from_pretrained(name, device=device, **from_pretrained_kwargs)
    return model.eval()


def from_hf(hf_model, *, tokenizer=None, device: Optional[Any] = None, fold_ln: bool = False):
    """Convert a GPT-2-architecture HuggingFace model (``GPT2LMHeadModel``) into a HookedTransformer.

    Works offline on a model you already hold, e.g. ``GPT2LMHeadModel.from_pretrained(local_dir)``.

    Raises:
        UnsupportedModelError: the model is not GPT-2-architecture.
    """
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    config = getattr(hf_model, "config", None)
    if getattr(config, "model_type", None) != "gpt2":
        raise UnsupportedModelError(
            f"from_hf() converts GPT-2-architecture models; got model_type "
            f"{getattr(config, 'model_type', None)!r}. For other architectures use "
            f"HookedTransformer.from_pretrained(name, hf_model=...) with the official model name"
        )
    act = {"gelu_new": "gelu_new", "gelu": "gelu", "relu": "relu"}.get(config.activation_function)
    if act is None:
        raise UnsupportedModelError(f"from_hf(): activation {config.activation_function!r} is not supported")
    cfg = HookedTransformerConfig(
        n_layers=config.n_layer,
        d_model=config.n_embd,
        n_heads=config.n_head,
        d_head=config.n_embd // config.n_head,
        d_mlp=config.n_inner or 4 * config.n_embd,
        d_vocab=config.vocab_size,
        n_ctx=config.n_positions,
        act_fn=act,
        eps=config.layer_norm_epsilon,
        normalization_type="LN",
        positional_embedding_type="standard",
        attention_dir="causal",
        model_name=getattr(config, "name_or_path", "") or "gpt2-local",
        tokenizer_name=None,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    with torch.no_grad():
        state = convert_gpt2_weights(hf_model, cfg)
    model.load_and_process_state_dict(
        state, fold_ln=fold_ln, center_writing_weights=False, center_unembed=False, fold_value_biases=False
    )
    if device is not None:
        model = model.to(device)
    return model.eval()
