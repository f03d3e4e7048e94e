"""Tiny random-weight HuggingFace causal LMs of every supported family, built offline.

Each model comes from its family's own ``transformers`` config class (2 layers, small dims,
eager attention); every weight, bias and norm parameter is re-drawn from a seeded
``torch.Generator`` (HF initialises biases to zero and norms to one, which would hide mistakes).
No hub access. (Task E writes a similar factory in tests/families.py; the lead deduplicates.)
"""

from __future__ import annotations

from typing import Any

import torch

from conftest import D_VOCAB, N_CTX

# family name -> (config class name, keyword arguments). Sizes: 2 layers; GPT-2 matches conftest's
# HookedTransformer sizes (3 heads x 8, d_model 24) so it converts with from_hf for cross-checks.
FAMILY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("GPT2Config", dict(n_positions=N_CTX, n_embd=24, n_layer=2, n_head=3, n_inner=48)),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                                       intermediate_size=48, max_position_embeddings=N_CTX, rotary_pct=0.5,
                                       use_parallel_residual=True, attention_bias=True)),
    "gpt_neox_sequential": ("GPTNeoXConfig", dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                                                  intermediate_size=48, max_position_embeddings=N_CTX,
                                                  rotary_pct=1.0, use_parallel_residual=False)),
    "gptj": ("GPTJConfig", dict(n_positions=N_CTX, n_embd=24, n_layer=2, n_head=3, rotary_dim=4, n_inner=48)),
    "llama": ("LlamaConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=N_CTX, attention_bias=True,
                                  mlp_bias=True)),
    "mistral": ("MistralConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=N_CTX,
                                      sliding_window=4)),
    "qwen2": ("Qwen2Config", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=N_CTX)),
    "gemma": ("GemmaConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=1, head_dim=8, max_position_embeddings=N_CTX)),
    # heads wider than d_model / n_heads (as in Gemma-7B): n_heads * head_dim != hidden_size
    "gemma_wide_heads": ("GemmaConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                             max_position_embeddings=N_CTX)),
}
FAMILIES = list(FAMILY_CONFIGS)


def hf_config(family: str, **overrides):
    """The small config of ``family`` (eager attention, vocabulary ``D_VOCAB``)."""
    import transformers

    cls_name, kwargs = FAMILY_CONFIGS[family]
    kwargs = dict(kwargs, vocab_size=D_VOCAB, bos_token_id=0, eos_token_id=0, pad_token_id=None, **overrides)
    config = getattr(transformers, cls_name)(**kwargs)
    config._attn_implementation = "eager"
    return config


def perturb_hf(model, seed: int):
    """Re-draw EVERY parameter of ``model`` from a seeded generator (in place); eval mode."""
    from transformers.pytorch_utils import Conv1D

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            for name, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
                is_norm = "norm" in type(module).__name__.lower()
                if p.ndim == 1 and is_norm and name == "weight":  # norm gains (Gemma's is an offset of 1)
                    value = 1.0 + 0.2 * noise
                elif p.ndim == 1:  # biases, norm shifts
                    value = 0.3 * noise
                else:  # matrices, scaled by fan-in (Conv1D stores [in, out])
                    fan_in = p.shape[0] if isinstance(module, Conv1D) else p.shape[-1]
                    value = noise / fan_in**0.5
                p.copy_(value.to(p.dtype))
    return model.eval()


def make_hf(family: str, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    """A tiny random causal LM of ``family`` (every parameter seeded, in ``dtype``), in eval mode.

    Built in ``dtype`` (not converted after), so float buffers such as rotary frequencies stay as
    the family keeps them, exactly as when the checkpoint is loaded back.
    """
    import transformers

    model = transformers.AutoModelForCausalLM.from_config(hf_config(family, **overrides), dtype=dtype)
    return perturb_hf(model, seed)


def hf_writers(model) -> list:
    """Every component that writes into the residual stream of a HuggingFace ``model``."""
    from scrub import MLP, Embed, Head, PosEmbed

    c = model.config
    out = [Embed()] + ([PosEmbed()] if c.model_type == "gpt2" else [])
    for layer in range(c.num_hidden_layers):
        out += [Head(layer, h) for h in range(c.num_attention_heads)] + [MLP(layer)]
    return out
