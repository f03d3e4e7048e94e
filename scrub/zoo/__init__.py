"""The zoo: small models that `scrub` trains itself, with their weights shipped in the package.

``scrub.zoo.load("induction-2l")`` returns a TransformerLens ``HookedTransformer`` (TransformerLens 3;
under TransformerLens 4, which has none, the same weights as a HuggingFace ``GPT2LMHeadModel``, see
`scrub.zoo.hf`) built from
``weights/NAME.json`` (the ``HookedTransformerConfig`` keyword arguments, training metadata and
measured losses and head scores) and ``weights/NAME.safetensors`` (the parameters). Nothing is
downloaded and nothing is unpickled. ``python -m scrub.zoo.train NAME`` re-trains a model from its
recipe in `scrub.zoo.recipes`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from scrub.errors import ScrubError

__all__ = ["load", "available", "info"]

_WEIGHTS = Path(__file__).resolve().parent / "weights"


def available() -> list[str]:
    """The sorted names of the models whose weights are shipped (``load`` accepts these)."""
    if not _WEIGHTS.is_dir():
        return []
    return sorted(
        p.stem for p in _WEIGHTS.glob("*.json") if p.with_suffix(".safetensors").is_file()
    )


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or name not in available():
        raise ScrubError(
            f"no zoo model named {name!r}; available models: {available()} "
            f"(train a recipe from scrub/zoo/recipes.py with `python -m scrub.zoo.train NAME` "
            f"to add one)"
        )


def info(name: str) -> dict[str, Any]:
    """The model's JSON record: ``config``, ``training``, ``eval`` losses, ``heads``, ``notes``.

    Raises:
        ScrubError: no shipped model has that name (the message lists the available ones).
    """
    _check_name(name)
    return json.loads((_WEIGHTS / f"{name}.json").read_text())


FORMS = ("hooked", "hf")


def load(name: str, device: Optional[Any] = None, *, form: Optional[str] = None):
    """Load a zoo model in eval mode: a ``HookedTransformer``, or the equivalent HF GPT-2.

    Args:
        name: one of `available()`, e.g. ``"induction-2l"``.
        device: where to put the model (``"cpu"``, ``"cuda"``, a ``torch.device``); ``None``
            leaves it on the CPU.
        form: ``"hooked"`` (a TransformerLens ``HookedTransformer``; TransformerLens 3 only),
            ``"hf"`` (a ``transformers`` ``GPT2LMHeadModel`` with the same weights and logits;
            an attention-only model gets all-zero MLPs), or ``None``: ``"hooked"`` where
            TransformerLens has ``HookedTransformer``, else ``"hf"``.

    Raises:
        ScrubError: no shipped model has that name (the message lists the available ones), or
            its weights file does not match its config; an unknown ``form``.
        NeedsHookedTransformerError: ``form="hooked"`` under TransformerLens 4.
        UnsupportedModelError: ``form="hf"`` for a model plain GPT-2 cannot express.
    """
    from safetensors.torch import load_file

    from scrub.tlcompat import hooked_transformer_available

    if form is None:
        form = "hooked" if hooked_transformer_available() else "hf"
    if form not in FORMS:
        raise ScrubError(f"zoo.load(form={form!r}): choose one of {list(FORMS)} (or None for this TransformerLens's default)")
    record = info(name)
    state = load_file(str(_WEIGHTS / f"{name}.safetensors"), device="cpu")
    if form == "hf":
        from scrub.zoo.hf import gpt2_from_state

        try:
            model = gpt2_from_state(record["config"], state)
        except KeyError as err:
            raise ScrubError(
                f"zoo model {name!r}: the weights file lacks {err} that the config in {name}.json implies; "
                f"re-train it with `python -m scrub.zoo.train {name}`"
            ) from None
        return model if device is None else model.to(device)

    from scrub.zoo.recipes import build_model

    model = build_model(record["config"], seed=0, device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    buffers = {k for k, _ in model.named_buffers()}
    missing = [k for k in missing if k not in buffers]
    if missing or unexpected:
        raise ScrubError(
            f"zoo model {name!r}: the weights file does not match the config in {name}.json "
            f"(missing parameters {missing[:5]}, unexpected {list(unexpected)[:5]}); re-train it "
            f"with `python -m scrub.zoo.train {name}`"
        )
    model.eval()
    if device is not None:
        model = model.to(device, print_details=False)
    return model
