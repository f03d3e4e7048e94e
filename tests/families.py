"""Tiny random HuggingFace causal LMs of every family scrub reads, built offline: the tests' one factory.

``make_hf_model(family, seed)`` builds a 2-3 layer model from a small config of the family's own
``transformers`` config class (eager attention), in the dtype asked for (built in it, not cast
after, so float buffers such as rotary frequencies stay as the family keeps them, exactly as when
a checkpoint is loaded back), and re-draws EVERY parameter (weights, biases, norm gains and
shifts, embeddings) from a ``torch.Generator`` seeded with ``seed`` (HF initialises biases to
zero and norms to one, which would hide mistakes); the constructor's own initialisation runs
under ``torch.random.fork_rng`` so the global RNG is left as it was. Each config switches on what
makes its family different (partial rotary, grouped- and multi-query attention, biases, sliding
windows shorter than the test sequences, soft caps small enough to bite, heads wider than
``d_model / n_heads``), so a view or an engine that ignored one of them would not match the model.

``FAMILIES`` lists the names ``make_hf_model`` accepts (``"gpt_neox_sequential"`` is GPT-NeoX
with ``use_parallel_residual=False``; ``"gemma_wide_heads"`` is Gemma with ``n_heads * head_dim
!= d_model``, as in Gemma-7B); ``SCRUBBABLE`` those the scrubbing engines run (all of them: Gemma-2's
post-norms are re-normalised per tree node, docs/post-norms.md). ``random_tokens(model, n_rows, n_pos, seed)`` draws tokens;
``hf_writers(model)`` lists the components that write into the residual stream.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

VOCAB, N_CTX = 50, 16


def _gpt2(**kw: Any):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = dict(vocab_size=VOCAB, n_positions=N_CTX, n_embd=32, n_layer=2, n_head=4, activation_function="gelu_new",
        bos_token_id=0, eos_token_id=0,
    )
    return GPT2LMHeadModel, GPT2Config(**{**cfg, **kw})


def _gpt_neox(**kw: Any):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=N_CTX, rotary_pct=0.5, rotary_emb_base=1000, use_parallel_residual=True, hidden_act="gelu",
    )
    return GPTNeoXForCausalLM, GPTNeoXConfig(**{**cfg, **kw})


def _gpt_neox_sequential(**kw: Any):
    return _gpt_neox(**{"use_parallel_residual": False, **kw})


def _gptj(**kw: Any):
    from transformers import GPTJConfig, GPTJForCausalLM

    cfg = dict(vocab_size=VOCAB, n_positions=N_CTX, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_inner=64)
    return GPTJForCausalLM, GPTJConfig(**{**cfg, **kw})


def _llama(**kw: Any):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=N_CTX, attention_bias=True, mlp_bias=True,
        tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )
    return LlamaForCausalLM, LlamaConfig(**{**cfg, **kw})


def _mistral(**kw: Any):
    from transformers import MistralConfig, MistralForCausalLM

    cfg = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=N_CTX, sliding_window=3, tie_word_embeddings=False,
    )
    return MistralForCausalLM, MistralConfig(**{**cfg, **kw})


def _qwen2(**kw: Any):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=N_CTX, use_sliding_window=True, sliding_window=3,
        max_window_layers=1, tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM, Qwen2Config(**{**cfg, **kw})


def _gemma(**kw: Any):
    from transformers import GemmaConfig, GemmaForCausalLM

    cfg = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=N_CTX, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    return GemmaForCausalLM, GemmaConfig(**{**cfg, **kw})


def _gemma_wide_heads(**kw: Any):
    return _gemma(**{"num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 48, **kw})


def _gemma2(**kw: Any):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=N_CTX, query_pre_attn_scalar=12,
        attn_logit_softcapping=2.0, final_logit_softcapping=20.0, sliding_window=3,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    return Gemma2ForCausalLM, Gemma2Config(**{**cfg, **kw})


_BUILDERS: dict[str, Callable[..., Any]] = {
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "gpt_neox_sequential": _gpt_neox_sequential,
    "gptj": _gptj,
    "llama": _llama,
    "mistral": _mistral,
    "qwen2": _qwen2,
    "gemma": _gemma,
    "gemma_wide_heads": _gemma_wide_heads,
    "gemma2": _gemma2,
}

#: Every name `make_hf_model` accepts.
FAMILIES: tuple[str, ...] = tuple(_BUILDERS)
#: The families the scrubbing engines accept (every one; Gemma-2 with its post-norms re-normalised).
SCRUBBABLE: tuple[str, ...] = FAMILIES


def randomize_hf(model: Any, seed: int) -> Any:
    """Re-draw EVERY parameter of ``model`` from a generator seeded with ``seed`` (in place).

    Norm gains ``1 + 0.2 n`` (Gemma's ``(1 + w)`` norms: ``w = 0.2 n``), norm shifts and biases
    ``0.2 n``, embeddings ``n``, matrices ``n / sqrt(fan_in)``.
    """
    g = torch.Generator().manual_seed(seed)
    one_plus = model.config.model_type in ("gemma", "gemma2")
    seen: set[int] = set()
    with torch.no_grad():
        for module in model.modules():
            kind = type(module).__name__
            for name, p in module.named_parameters(recurse=False):
                if id(p) in seen:  # tied weights are drawn once
                    continue
                seen.add(id(p))
                noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
                if "Norm" in kind and name == "weight":
                    value = 0.2 * noise if one_plus else 1 + 0.2 * noise
                elif name == "bias" or p.ndim == 1:
                    value = 0.2 * noise
                elif "Embedding" in kind:
                    value = noise
                elif kind == "Conv1D":  # GPT-2: [in, out]
                    value = noise / p.shape[0] ** 0.5
                else:  # nn.Linear: [out, in]
                    value = noise / p.shape[-1] ** 0.5
                p.copy_(value.to(p.dtype))
    return model


def make_hf_model(
    family: str, seed: int = 0, dtype: torch.dtype = torch.float32, attn_implementation: str = "eager", **overrides: Any
) -> Any:
    """A tiny random HuggingFace causal LM of ``family`` (see `FAMILIES`), in eval mode.

    ``overrides`` replace fields of the family's small config (e.g. ``num_key_value_heads=4``);
    ``attn_implementation`` is ``"eager"`` (default) or ``"sdpa"``.
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
    cls, config = _BUILDERS[family](**overrides)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        model = cls._from_config(config, dtype=dtype)
    if next(model.parameters()).dtype != dtype:
        raise ValueError(f"{family}: built in {next(model.parameters()).dtype}, not {dtype}")
    randomize_hf(model, seed)
    return model.eval()


def random_tokens(model: Any, n_rows: int = 3, n_pos: int = 10, seed: int = 0) -> torch.Tensor:
    """Seeded random token ids ``[n_rows, n_pos]`` in the model's vocabulary."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (n_rows, n_pos), generator=g)


def hf_writers(model: Any) -> list:
    """Every component that writes into the residual stream of a HuggingFace ``model``."""
    from scrub import MLP, Embed, Head, PosEmbed

    c = model.config
    out = [Embed()] + ([PosEmbed()] if c.model_type == "gpt2" else [])
    for layer in range(c.num_hidden_layers):
        out += [Head(layer, h) for h in range(c.num_attention_heads)] + [MLP(layer)]
    return out
