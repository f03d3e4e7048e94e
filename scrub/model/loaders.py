"""Loading models to scrub: zoo models, local HuggingFace checkpoints (offline), and hub models.

``load_model(name_or_local_dir)``:

* a zoo name (``"induction-2l"``): the zoo model (shipped weights, no download);
* a local directory holding a HuggingFace checkpoint (``config.json`` and weights, as
  ``save_pretrained`` writes them): the causal LM loaded offline (``local_files_only=True``), in
  the dtype it was saved in, in eval mode; a tokenizer saved in the same directory is checked
  against the model's embedding and attached as ``model.tokenizer``;
* any other name: the real hub path, for users with the internet: ``HookedTransformer.from_pretrained``
  for TransformerLens's official names (TransformerLens 3), else
  ``AutoModelForCausalLM.from_pretrained``.

Everything that can be wrong with a checkpoint is refused before any weight is used:
`CheckpointError` (missing config or weights, a tokenizer whose vocabulary does not fit) and
`UnsupportedModelError` (a family or setting scrub does not run, e.g. mixture of experts).
``from_hf(hf_model)`` converts a GPT-2-architecture HF model into a ``HookedTransformer``;
`model_limits` gives a model's vocabulary and context sizes for dataset checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from scrub.errors import CheckpointError, UnsupportedModelError

__all__ = ["load_model", "load_local", "from_hf", "model_limits"]

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_model(name: str, *, device: Optional[Any] = None, **from_pretrained_kwargs):
    """A model to scrub, by zoo name, local checkpoint directory, or hub name (see module docstring).

    Hub models through TransformerLens load with its defaults (LayerNorm folded, weights centred),
    which ``scrub`` supports; pass ``fold_ln=False`` etc. to change them.

    Raises:
        CheckpointError: a directory without config or weights, a path that does not exist, a
            tokenizer that does not fit, or a hub name that cannot be fetched (e.g. offline).
        UnsupportedModelError: a checkpoint of a family or setting scrub does not run.
    """
    from scrub import zoo

    if name in zoo.available():
        return zoo.load(name, device=device)
    path = Path(name).expanduser()
    if path.is_dir():
        return load_local(path, device=device, **from_pretrained_kwargs)
    if path.exists() or _looks_like_a_path(name):
        raise CheckpointError(
            f"load_model() takes a zoo name {sorted(zoo.available())}, a directory holding a HuggingFace "
            f"checkpoint, or a hub name; {name!r} looks like a path but is not a directory; pass the "
            f"directory that model.save_pretrained() wrote"
        )
    return _from_hub(name, device=device, **from_pretrained_kwargs)


def _looks_like_a_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def load_local(path, *, device: Optional[Any] = None, **from_pretrained_kwargs):
    """A HuggingFace causal LM from a local checkpoint directory, offline, in its own dtype, eval mode.

    Raises:
        CheckpointError: no ``config.json``, no (or incomplete) weights, or a saved tokenizer with
            more tokens than the model's embedding has rows.
        UnsupportedModelError: the checkpoint's family or a setting is not supported.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from scrub.model.hf_modules import check_config

    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"a HuggingFace checkpoint directory holds config.json and the weights; {str(path)!r} has no "
            f"config.json (it holds {_listing(path)}); save the model with model.save_pretrained(dir)"
        )
    _check_weights(path)
    model_type = _read_json(config_file).get("model_type")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (ValueError, KeyError) as err:
        raise UnsupportedModelError(
            f"config.json in {str(path)!r} names model_type {model_type!r}, which this transformers "
            f"cannot build ({err}); use a checkpoint of a supported family"
        ) from None
    check_config(config)
    kwargs = {"dtype": "auto", **from_pretrained_kwargs}
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **kwargs)
    tokenizer = _local_tokenizer(path, model)
    if tokenizer is not None:
        model.tokenizer = tokenizer
    if device is not None:
        model = model.to(device)
    return model.eval()


def _listing(path: Path) -> str:
    names = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    return f"{names[:12]}" if names else "no files"


def _read_json(file: Path) -> dict:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{file.name} must be readable JSON; {str(file)!r} is not ({err}); save the model again with "
            f"save_pretrained"
        ) from None


def _check_weights(path: Path) -> None:
    """Weights are present: a single file, or an index whose every shard exists."""
    if any((path / name).is_file() for name in _WEIGHT_FILES):
        return
    for index_name in _WEIGHT_INDEXES:
        index = path / index_name
        if index.is_file():
            shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
            missing = [s for s in shards if not (path / s).is_file()]
            if not shards or missing:
                raise CheckpointError(
                    f"every shard {index_name} lists must be in the checkpoint directory; {str(path)!r} lacks "
                    f"{missing or 'a weight map'}; copy the missing shards or save the model again"
                )
            return
    raise CheckpointError(
        f"a HuggingFace checkpoint directory holds the weights ({' or '.join(_WEIGHT_FILES)}, or a sharded "
        f"index); {str(path)!r} has none (it holds {_listing(path)}); save the model with model.save_pretrained(dir)"
    )


def _local_tokenizer(path: Path, model) -> Any:
    """The tokenizer saved next to the model, checked to fit its embedding (None when there is none)."""
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"the tokenizer files in {str(path)!r} must load offline with AutoTokenizer; they do not ({err}); "
            f"save the tokenizer with tokenizer.save_pretrained(dir) or remove its files"
        ) from None
    d_vocab, _, _ = model_limits(model)
    if len(tokenizer) > d_vocab:
        raise CheckpointError(
            f"a checkpoint's tokenizer must produce only ids the model embeds; the tokenizer in {str(path)!r} "
            f"has {len(tokenizer)} tokens but the model's embedding has {d_vocab} rows; save the tokenizer the "
            f"model was trained with"
        )
    return tokenizer


def _from_hub(name: str, *, device: Optional[Any] = None, **kwargs):
    """The real hub path (needs the internet the first time)."""
    hooked = _transformer_lens_official(name)
    try:
        if hooked is not None:
            model = hooked.from_pretrained(name, device=device, **kwargs)
            return model.eval()
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(name, **{"dtype": "auto", **kwargs})
    except OSError as err:
        raise CheckpointError(
            f"load_model() fetches names that are neither zoo models nor local directories from the "
            f"HuggingFace hub; {name!r} could not be fetched ({str(err).splitlines()[0]}); check the name, "
            f"connect to the internet, or pass a local directory written by save_pretrained()"
        ) from None
    from scrub.model.hf_modules import check_config

    check_config(model.config)
    if device is not None:
        model = model.to(device)
    return model.eval()


def _transformer_lens_official(name: str):
    """``HookedTransformer`` when TransformerLens 3 is installed and knows ``name``; else None."""
    from scrub.tlcompat import hooked_transformer_available

    if not hooked_transformer_available():  # TransformerLens 4 has no HookedTransformer
        return None
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(name)
    except (ValueError, KeyError):
        return None
    return HookedTransformer


def model_limits(model) -> tuple[int, int, int]:
    """``(d_vocab, d_vocab_out, n_ctx)``: token ids the model embeds, logits it gives, positions it takes.

    For a TransformerLens model from its config; for a HuggingFace causal LM from its embedding,
    its output layer and ``max_position_embeddings`` (``n_positions``).

    Raises:
        UnsupportedModelError: neither a TransformerLens nor a HuggingFace model.
    """
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "d_vocab") and hasattr(cfg, "n_ctx"):
        return int(cfg.d_vocab), int(getattr(cfg, "d_vocab_out", cfg.d_vocab)), int(cfg.n_ctx)
    from scrub.model.hf_modules import is_hf_model

    if is_hf_model(model):
        config = model.config
        d_vocab = int(model.get_input_embeddings().num_embeddings)
        output = model.get_output_embeddings()
        d_out = int(getattr(output, "out_features", None) or output.weight.shape[0]) if output is not None else d_vocab
        n_ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        return d_vocab, d_out, int(n_ctx)
    raise UnsupportedModelError(
        f"scrub reads vocabulary and context sizes from TransformerLens models and HuggingFace causal LMs; "
        f"got {type(model).__name__}; load the model with scrub.load_model"
    )


def from_hf(hf_model, *, tokenizer=None, device: Optional[Any] = None, fold_ln: bool = False):
    """Convert a GPT-2-architecture HuggingFace model (``GPT2LMHeadModel``) into a HookedTransformer.

    Works offline on a model you already hold, e.g. ``GPT2LMHeadModel.from_pretrained(local_dir)``.

    Raises:
        NeedsHookedTransformerError: TransformerLens 4 (no HookedTransformer); pass the HF model itself.
        UnsupportedModelError: the model is not GPT-2-architecture.
    """
    from scrub.tlcompat import require_hooked_transformer

    HookedTransformer = require_hooked_transformer("from_hf() (it builds a HookedTransformer)")
    from transformer_lens import HookedTransformerConfig
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
