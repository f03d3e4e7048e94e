"""`HuggingFaceBackend`: the reference engine's hooks on plain HuggingFace causal LMs.

PyTorch forward hooks and pre-hooks on the modules `scrub.model.hf_modules` names; the model
runs its own forward (its own attention, rotary embeddings, masks and dtype), so this backend
shares nothing with the model view. Every quantity is a pre-norm residual-stream quantity:

Outputs (what a component adds to the residual stream):

* ``Embed()``: the token-embedding module's output (Gemma's ``sqrt(d_model)`` scaling included:
  it happens inside that module);
* ``PosEmbed()``: the learned position-embedding module's output (GPT-2; rotary families have none);
* ``Head(l, h)``: head ``h``'s slice of the output projection's input (the attention's
  pre-projection values, head-major) times its slice of the projection weight, *without* the
  projection's bias (read with a pre-hook on GPT-2 ``c_proj`` (Conv1D, weight ``[in, out]``),
  GPT-NeoX ``dense``, GPT-J ``out_proj``, Llama/Mistral/Qwen2/Gemma ``o_proj``);
* ``MLP(l)``: the MLP module's output (Gemma-2: the output of its post-MLP norm
  ``post_feedforward_layernorm``, what the MLP adds to the residual stream);
* ``Output()``: the logits.

Post-norms (Gemma-2): a layer's attention adds ``N(sum_h o_h + b_O)`` to the residual stream,
``N`` its ``post_attention_layernorm``. `HuggingFaceBackend.attention_sums` reads that norm's
input ``sum_h o_h + b_O`` (a pre-hook) and `HuggingFaceBackend.attn_write` applies the model's
own norm module to a given sum, so the reference engine can re-normalise a sum in which some
heads' outputs are replaced (docs/post-norms.md).

Ports (``delta`` is added to the residual stream the port reads, then the model's own norm
module recomputes what the port's consumer sees):

* a head's ``q``/``k``/``v``: the residual before the layer's input norm (captured by a pre-hook
  on that norm); separate projection modules get a pre-hook replacing their input with
  ``norm(resid + delta)``; a fused projection (GPT-2 ``c_attn`` ``[q|k|v]``, GPT-NeoX
  ``query_key_value`` per-head ``[q_h|k_h|v_h]``) gets a forward hook that recomputes the
  projection on ``norm(resid + delta)`` and splices in that port's part of the output;
* an MLP's ``in``: the residual before the pre-MLP norm (in GPT-J's and parallel GPT-NeoX blocks
  the same residual the attention reads), patched by a pre-hook on the MLP module with
  ``norm(resid + delta)``;
* the output's ``in``: the residual before the final norm (a pre-hook on it adds ``delta``).

One port patch changes the whole projection (every head's q, or every key/value head's k or v),
not head ``h``'s columns alone. That is exact for the engine: a pass with a patch at
``Head(l, h)``'s ports reads only ``Head(l, h)``'s output, which depends on nothing else the
patch changes (later layers are never read in that pass). Under grouped-query attention head
``h`` shares its key/value head with the other heads of its group; a k/v patch changes what the
whole group reads, but only head ``h``'s output is read, so the result is head ``h``'s own
reading of a patched key/value input, as DESIGN.md's per-head port semantics require.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

from torch import Tensor, nn

from scrub.components import MLP, Component, Embed, Head, Output, PosEmbed
from scrub.engine.backends.base import Patch, check_component
from scrub.errors import ScheduleError, UnsupportedModelError
from scrub.model.hf_modules import HFModules, LayerModules, hf_modules

__all__ = ["HuggingFaceBackend"]

_PORT_INDEX = {"q": 0, "k": 1, "v": 2}


class HuggingFaceBackend:
    """Hooks on a HuggingFace causal LM's modules (see the module docstring for the semantics).

    Raises:
        UnsupportedModelError: the family or a setting is not supported (`scrub.model.hf_modules`),
            or the model is in training mode.
    """

    name = "huggingface"

    def __init__(self, model: Any) -> None:
        self.model = model
        self.modules: HFModules = hf_modules(model)
        if model.training:
            raise UnsupportedModelError(
                f"scrubbing needs a deterministic model, but this {type(model).__name__} is in training mode "
                f"(dropout is active); call model.eval() first (scrub.load_model returns models in eval mode)"
            )
        self.device = next(model.parameters()).device
        self.n_layers = self.modules.n_layers
        self.post_norms = self.modules.post_norms

    # ---- interface ----------------------------------------------------------------------------

    def check(self, component: Component) -> None:
        m = self.modules
        check_component(component, m.n_layers, m.n_heads, True, m.pos_embed is not None, f"this {m.model_type} model")

    def session(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def logits(self, tokens: Tensor) -> Tensor:
        return self.model(input_ids=tokens, use_cache=False).logits

    def attention_sums(self, tokens: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
        """Post-norm models: per layer in ``layers``, the input of its post-attention norm in an
        unpatched pass on ``tokens``, ``sum_h o_h + b_O`` ``[n, pos, d_model]``."""
        sums: dict[int, Tensor] = {}
        handles = [
            self._attn_out_norm(layer).register_forward_pre_hook(
                lambda mod, args, layer=layer: sums.__setitem__(layer, args[0].detach().clone())
            )
            for layer in dict.fromkeys(layers)
        ]
        try:
            self.model(input_ids=tokens, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        missing = sorted(set(layers) - set(sums))
        if missing:
            raise UnsupportedModelError(
                f"hooks on the post-attention norms of layers {missing} did not fire on {type(self.model).__name__}; "
                f"its forward does not call the modules scrub.model.hf_modules names for {self.modules.model_type}"
            )
        return sums

    def attn_write(self, layer: int, heads_sum: Tensor) -> Tensor:
        """Post-norm models: what layer ``layer``'s attention adds to the residual stream when its
        heads and bias sum to ``heads_sum`` ``[n, pos, d_model]`` (the model's own norm module)."""
        return self._attn_out_norm(layer)(heads_sum)

    def _attn_out_norm(self, layer: int) -> nn.Module:
        norm = self.modules.layers[layer].attn_out_norm
        if norm is None:
            raise ScheduleError(
                f"the {self.modules.model_type} model has no post-attention norm: each head writes to the "
                f"residual stream on its own; nothing to re-normalise"
            )
        return norm

    def run(self, tokens: Tensor, reads: Sequence[Component], patches: Sequence[Patch] = ()) -> dict[Component, Tensor]:
        """One forward pass with ``patches`` applied; the outputs of ``reads`` from that pass."""
        for component, port, _ in patches:
            if port not in component.ports:
                raise ScheduleError(f"{component} has no port {port!r} (its ports: {list(component.ports)})")
        out: dict[Component, Tensor] = {}
        fired: set[str] = set()
        resid: dict[int, Tensor] = {}  # id(norm module) -> its input in this pass
        handles: list = []

        def hook(module: nn.Module, fn: Callable, tag: str, pre: bool) -> None:
            def wrapped(*args):
                fired.add(tag)
                return fn(*args)

            register = module.register_forward_pre_hook if pre else module.register_forward_hook
            handles.append(register(wrapped))

        def capture(norm: nn.Module) -> None:
            if id(norm) not in resid:
                resid[id(norm)] = None  # type: ignore[assignment]
                hook(norm, lambda mod, args: resid.__setitem__(id(mod), args[0]), f"capture {id(norm)}", pre=True)

        try:
            for component, port, delta in patches:
                self._patch(component, port, delta, hook, capture, resid)
            for component in dict.fromkeys(reads):
                if not isinstance(component, Output):
                    self._read(component, hook, out, tokens.shape[0])
            logits = self.model(input_ids=tokens, use_cache=False).logits
        finally:
            for handle in handles:
                handle.remove()
        wanted = {f"read {c}" for c in reads if not isinstance(c, Output)} | {f"patch {c}.{p}" for c, p, _ in patches}
        if wanted - fired:
            raise UnsupportedModelError(
                f"hooks for {sorted(wanted - fired)} did not fire on {type(self.model).__name__}; its forward "
                f"does not call the modules scrub.model.hf_modules names for {self.modules.model_type}"
            )
        if any(isinstance(c, Output) for c in reads):
            out[Output()] = logits
        return out

    # ---- reads --------------------------------------------------------------------------------

    def _read(self, component: Component, hook, out: dict, n_rows: int) -> None:
        m = self.modules
        tag = f"read {component}"
        if isinstance(component, Embed):
            hook(m.embed, lambda mod, args, value: out.__setitem__(component, value.detach().clone()), tag, pre=False)
        elif isinstance(component, PosEmbed):
            def keep_pos(mod, args, value: Tensor) -> None:  # value: [1, pos, d_model] (position ids [1, pos])
                out[component] = value.detach().expand(n_rows, *value.shape[-2:]).clone()  # [n, pos, d_model]

            hook(m.pos_embed, keep_pos, tag, pre=False)
        elif isinstance(component, Head):
            layer = m.layers[component.layer]
            head = component.head

            def keep_head(mod, args) -> None:
                out[component] = self._head_output(layer, head, args[0])

            hook(layer.out_proj, keep_head, tag, pre=True)
        elif isinstance(component, MLP):
            layer = m.layers[component.layer]
            writer = layer.mlp if layer.mlp_out is None else layer.mlp_out  # Gemma-2: the post-MLP norm
            hook(writer, lambda mod, args, value: out.__setitem__(component, value.detach().clone()), tag, pre=False)
        else:
            raise ScheduleError(f"{component} writes nothing into the residual stream, so it has no output to read")

    def _head_output(self, layer: LayerModules, head: int, z: Tensor) -> Tensor:
        """Head ``head``'s share of the output projection, without its bias: ``[n, pos, d_model]``."""
        d_head = self.modules.d_head
        cols = slice(head * d_head, (head + 1) * d_head)
        weight = layer.out_proj.weight
        z_h = z[..., cols]  # [n, pos, d_head]
        if self.modules.paths.conv1d:
            return z_h @ weight[cols, :]  # Conv1D weight: [in, out]
        return z_h @ weight[:, cols].T  # nn.Linear weight: [out, in]

    # ---- patches ------------------------------------------------------------------------------

    def _patch(self, component: Component, port: str, delta: Tensor, hook, capture, resid: dict) -> None:
        m = self.modules
        tag = f"patch {component}.{port}"
        if isinstance(component, Output):
            hook(m.final_norm, lambda mod, args: (args[0] + delta, *args[1:]), tag, pre=True)
            return
        if isinstance(component, MLP):
            layer = m.layers[component.layer]
            norm = layer.mlp_norm
            capture(norm)
            hook(layer.mlp, lambda mod, args: (norm.forward(resid[id(norm)] + delta), *args[1:]), tag, pre=True)
            return
        if not isinstance(component, Head):
            raise ScheduleError(f"{component} has no ports, so nothing can be patched into it")
        layer = m.layers[component.layer]
        norm = layer.attn_norm
        capture(norm)
        if layer.qkv is None:  # separate projections: replace the projection's input
            proj = {"q": layer.q, "k": layer.k, "v": layer.v}[port]
            hook(proj, lambda mod, args: (norm.forward(resid[id(norm)] + delta), *args[1:]), tag, pre=True)
            return
        splice = self._splicer(port)

        def patch_fused(mod: nn.Module, args, value: Tensor) -> Tensor:
            patched = mod.forward(norm.forward(resid[id(norm)] + delta))  # [n, pos, 3 * H * d_head]
            return splice(value, patched)

        hook(layer.qkv, patch_fused, tag, pre=False)

    def _splicer(self, port: str) -> Callable[[Tensor, Tensor], Tensor]:
        """``splice(value, patched)``: ``value`` with ``port``'s part of a fused q/k/v output from ``patched``."""
        m = self.modules
        index = _PORT_INDEX[port]
        width = m.n_heads * m.d_head
        kind = m.paths.qkv_layout.kind

        def splice(value: Tensor, patched: Tensor) -> Tensor:
            value = value.clone()
            if kind == "blocks":  # [q | k | v], each H * d_head wide
                part = slice(index * width, (index + 1) * width)
                value[..., part] = patched[..., part]
            else:  # per head [q_h | k_h | v_h]: view as [..., H, 3, d_head]
                shape = (*value.shape[:-1], m.n_heads, 3, m.d_head)
                view, patched_view = value.view(shape), patched.reshape(shape)
                view[..., index, :] = patched_view[..., index, :]
            return value

        return splice

