"""`TransformerLensBackend`: the reference engine's hooks on TransformerLens models.

Reads ``hook_embed``, ``hook_pos_embed``, ``attn.hook_result`` (one head's slice) and
``hook_mlp_out``; adds a port's delta at ``hook_{q,k,v}_input`` (one head's slice), ``hook_mlp_in``
or the last ``hook_resid_post``. Only hook names are used, so a TransformerLens 4
``TransformerBridge`` whose per-head hooks fire (e.g. GPT-2's joint-qkv attention bridge; tested
with TransformerLens 3.9's ``model_bridge``) runs here too. Values are kept under the hook name
asked for (a bridge resolves aliases such as ``hook_mlp_out`` to other hook points). A hook that
does not fire is an `UnsupportedModelError`, never a silent no-op.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from torch import Tensor

from scrub.components import MLP, Component, Head, Output, hooks
from scrub.engine.backends.base import Patch, check_component
from scrub.errors import ScheduleError, UnsupportedModelError

__all__ = ["TransformerLensBackend", "per_head_hooks"]



@contextlib.contextmanager
def per_head_hooks(model) -> Iterator[None]:
    """Turn on TransformerLens's per-head input/output hooks; restore settings and clear hooks after.

    Raises:
        UnsupportedModelError: the model refuses a per-head setting (e.g. a bridge whose
            attention class does not implement it).
    """
    cfg = model.cfg
    fields = ("use_split_qkv_input", "use_attn_result", "use_hook_mlp_in", "use_attn_in")
    saved = {f: getattr(cfg, f, False) for f in fields}
    try:
        try:
            if saved["use_attn_in"]:
                model.set_use_attn_in(False)
            model.set_use_split_qkv_input(True)
            model.set_use_attn_result(True)
            if not getattr(cfg, "attn_only", False):
                model.set_use_hook_mlp_in(True)
        except (NotImplementedError, AttributeError) as err:
            raise UnsupportedModelError(
                f"the reference engine needs TransformerLens per-head hooks (use_split_qkv_input, "
                f"use_attn_result, use_hook_mlp_in), which this {type(model).__name__} refuses ({err}); "
                f"pass the HuggingFace model itself, which the engine hooks directly"
            ) from None
        yield
    finally:
        model.reset_hooks(including_permanent=False)
        for f, value in saved.items():
            if hasattr(cfg, f):
                setattr(cfg, f, value)


class TransformerLensBackend:
    """TransformerLens hook points (see the module docstring for which ones)."""

    name = "transformer_lens"

    post_norms = False

    def __init__(self, model) -> None:
        if _post_norms(model):
            raise UnsupportedModelError(
                f"rule: the reference engine's TransformerLens hooks need heads that write to the residual "
                f"stream one by one; offender: this {type(model).__name__} normalises each block's attention "
                f"output after summing its heads (Gemma-2 post-norms); fix: pass the HuggingFace model, which "
                f"the engine hooks directly (for a TransformerBridge: scrub.model.bridge.hf_model_of_bridge)"
            )
        self.model = model
        self.device = next(model.parameters()).device
        self.n_layers = int(model.cfg.n_layers)

    def check(self, component: Component) -> None:
        cfg = self.model.cfg
        check_component(
            component, self.n_layers, int(cfg.n_heads), not getattr(cfg, "attn_only", False),
            getattr(cfg, "positional_embedding_type", "standard") in ("standard", "shortformer"), type(self.model).__name__,
        )

    def session(self) -> contextlib.AbstractContextManager:
        return per_head_hooks(self.model)

    def logits(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)

    def attention_sums(self, tokens: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
        raise ScheduleError("internal: a TransformerLens model without post-norms has no attention sums to read")

    def attn_write(self, layer: int, heads_sum: Tensor) -> Tensor:
        raise ScheduleError("internal: a TransformerLens model without post-norms has no post-attention norm")

    def run(self, tokens: Tensor, reads: Sequence[Component], patches: Sequence[Patch] = ()) -> dict[Component, Tensor]:
        store: dict[str, Tensor] = {}  # by the name asked for (a bridge's hook.name may be an alias's target)

        def keep(name: str):
            def hook_fn(value: Tensor, hook) -> None:
                store[name] = value.detach().clone()

            return hook_fn

        def fired(name: str, fn):
            def hook_fn(value: Tensor, hook):
                store.setdefault(name, value)  # a patch point that fired
                return fn(value, hook)

            return hook_fn

        names = {c: hooks.output_of(c) for c in reads if not isinstance(c, Output)}
        fwd = []
        for c, port, delta in patches:
            name = self._port_hook(c, port)
            fwd.append((name, fired(name, _adder(c, delta))))
        fwd += [(name, keep(name)) for name in set(names.values())]
        with self.model.hooks(fwd_hooks=fwd):
            logits = self.model(tokens)
        missing = sorted({name for name, _ in fwd if name not in store})
        if missing:
            raise UnsupportedModelError(
                f"hooks {missing} did not fire on {type(self.model).__name__}; the reference engine "
                f"needs per-head hooks (use_split_qkv_input, use_attn_result, use_hook_mlp_in)"
            )
        out: dict[Component, Tensor] = {c: _select(c, store[name]) for c, name in names.items()}
        if any(isinstance(c, Output) for c in reads):
            out[Output()] = logits
        return out

    def _port_hook(self, component: Component, port: str) -> str:
        if isinstance(component, Head):
            return hooks.head_input(component.layer, port)
        if isinstance(component, MLP):
            return hooks.mlp_in(component.layer)
        if isinstance(component, Output):
            return hooks.final_resid(self.n_layers)
        raise ScheduleError(f"{component} has no ports, so nothing can be patched into it")


def _post_norms(model) -> bool:
    """Whether ``model`` normalises its attention output after summing the heads (Gemma-2): a
    HookedTransformer's ``use_normalization_before_and_after``, or a TransformerBridge over a
    HuggingFace family with post-norms (a bridge's config does not say so)."""
    from scrub.model.hf_modules import FAMILIES

    if getattr(model.cfg, "use_normalization_before_and_after", False):
        return True
    original = model.__dict__.get("original_model")  # a TransformerBridge's HuggingFace model
    paths = FAMILIES.get(getattr(getattr(original, "config", None), "model_type", None))
    if paths is not None:
        return paths.attn_out_norm is not None
    return str(getattr(model.cfg, "architecture", None) or "").startswith(("Gemma2", "Gemma3"))


def _select(component: Component, value: Tensor) -> Tensor:
    """A head's slice of a per-head hook value; other hook values as they are."""
    if isinstance(component, Head):
        return value[:, :, component.head]  # [n, pos, d_model]
    return value


def _adder(component: Component, delta: Tensor):
    """A TransformerLens hook that adds ``delta`` ``[n, pos, d]`` to ``component``'s port input."""

    def add(value: Tensor, hook) -> Tensor:
        value = value.clone()
        if isinstance(component, Head):
            value[:, :, component.head] += delta  # value: [n, pos, n_heads, d_model]
        else:
            value += delta  # value: [n, pos, d_model]
        return value

    return add
