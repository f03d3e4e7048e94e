"""The zoo: small models that `scrub` trains itself, with their weights shipped in the package.

``scrub.zoo.load("induction-2l")`` returns a TransformerLens ``HookedTransformer`` (TransformerLens 3;
under TransformerLens 4, which has none, the same weights as a HuggingFace ``GPT2LMHeadModel``, see
`scrub.zoo.hf`) built from
``weights/NAME.json`` (the ``HookedTransformerConfig`` keyword arguments, training metadata and
measured losses and head scores) and ``weights/NAME.safetensors`` (the parameters). Nothing is
downloaded and nothing is unpickled. ``python -m scrub.zoo.train NAME`` re-trains a model from its
recipe in `scrub.zoo.recipes`.

The zoo also holds the hand-set models of `scrub.zoo.known` (``"induction-known"``,
``"lookup-known"``): no training, every weight set so that the circuit is known by construction.
``available()`` lists both kinds (``available("trained")`` / ``available("known")`` one of them),
``load`` builds either, and ``info`` of a known model gives its description and true edges.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from scrub.errors import ScrubError

__all__ = ["load", "available", "info", "KINDS"]

_WEIGHTS = Path(__file__).resolve().parent / "weights"


KINDS = ("all", "trained", "known")


def _trained() -> list[str]:
    if not _WEIGHTS.is_dir():
        return []
    return [p.stem for p in _WEIGHTS.glob("*.json") if p.with_suffix(".safetensors").is_file()]


def _known() -> list[str]:
    from scrub.zoo import known

    return known.available()


def available(kind: str = "all") -> list[str]:
    """The sorted names of the zoo's models (``load`` accepts these).

    Args:
        kind: ``"trained"`` (weights shipped, trained by `scrub.zoo.train`), ``"known"`` (hand-set
            weights whose circuit is known by construction, `scrub.zoo.known`) or ``"all"``.

    Raises:
        ScrubError: another ``kind``.
    """
    if kind not in KINDS:
        raise ScrubError(f"zoo.available(kind={kind!r}): choose one of {list(KINDS)}")
    names = {"trained": _trained, "known": _known}
    if kind == "all":
        return sorted(_trained() + _known())
    return sorted(names[kind]())


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or name not in available():
        raise ScrubError(
            f"no zoo model named {name!r}; available models: {available()} "
            f"(train a recipe from scrub/zoo/recipes.py with `python -m scrub.zoo.train NAME` "
            f"to add one)"
        )


def info(name: str) -> dict[str, Any]:
    """The model's record. A trained model: its JSON (``config``, ``training``, ``eval`` losses,
    ``heads``, ``notes``) plus ``kind: "trained"``. A known-circuit model: ``kind: "known"``, its
    ``description`` and its true ``circuit`` (edges as ``"child -> parent.port"``).

    Raises:
        ScrubError: the zoo has no model of that name (the message lists the available ones).
    """
    _check_name(name)
    if name in _known():
        from scrub.zoo import known

        entry = known.get(name)
        edges = sorted(f"{child} -> {parent}.{port}" for child, parent, port in entry.edges)
        return {"kind": "known", "name": name, "description": entry.description, "circuit": edges}
    return {"kind": "trained", **json.loads((_WEIGHTS / f"{name}.json").read_text())}


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

    if form is not None and form not in FORMS:
        raise ScrubError(f"zoo.load(form={form!r}): choose one of {list(FORMS)} (or None for this TransformerLens's default)")
    _check_name(name)
    if name in _known():
        return _load_known(name, device, form)
    if form is None:
        form = "hooked" if hooked_transformer_available() else "hf"
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


def _load_known(name: str, device: Optional[Any], form: Optional[str]):
    """A hand-set model of `scrub.zoo.known` (a ``HookedTransformer``: no normalisation, which a
    HuggingFace GPT-2 cannot express)."""
    from scrub.errors import UnsupportedModelError
    from scrub.tlcompat import require_hooked_transformer
    from scrub.zoo import known

    if form == "hf":
        raise UnsupportedModelError(
            f"rule: a known-circuit zoo model exists only as a HookedTransformer; offender: "
            f"zoo.load({name!r}, form='hf') (it has no LayerNorm, which HuggingFace GPT-2 always applies); "
            f"fix: load it with form=None or form='hooked' (TransformerLens 3)"
        )
    require_hooked_transformer(f"the known-circuit zoo model {name!r}")
    model = known.load(name)
    if device is not None:
        model = model.to(device, print_details=False)
    return model
