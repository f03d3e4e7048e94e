"""The reference engine: the slow, obviously-correct oracle.

It executes a `Schedule` with hooks on full forward passes of the source model, one tree node at
a time, exactly as DESIGN.md section 1 states. For a tree node ``n`` reading component ``C``
through port ``p``, with other datum ``o`` and claimed children ``k``:

    input_p = resid_p(o) - sum_k out_k(o) + sum_k scrubbed_k      (at the positions each edge claims)

The engine runs the model on ``o`` with a hook that adds ``scrubbed_k - out_k(o)`` to ``C``'s
port input (nothing else is patched in that pass) and reads ``C``'s output from the same pass.
A leaf runs its whole upstream on its own datum (per position: position ``t`` on the row drawn for
``t``). Speed is not a goal here; being easy to check is.

Post-norm models (Gemma-2, docs/post-norms.md): a layer's attention adds ``N(sum_h o_h + b_O)``
to the residual stream, so the claimed heads of a layer ``l`` feeding a port do not add their
differences one by one: the port gets ``N(S_l(o) + sum_k diff_k) - N(S_l(o))``, where ``S_l(o)``
is the input of layer ``l``'s post-attention norm on the other datum (read with a hook, as is
``N``, the model's own norm module) and ``diff_k = scrubbed_k - out_k(o)`` over the port's claimed
heads of layer ``l`` (zero outside the positions an edge claims): the layer's attention write
recomputed for this tree node, with the claimed heads' scrubbed outputs in place of their
outputs on ``o``.

The tree evaluation is here; the hooks are a backend's (`scrub.engine.backends`): TransformerLens
hook points on a ``HookedTransformer`` (or a ``TransformerBridge``), PyTorch module hooks on a plain
HuggingFace causal LM. Neither reads the model view, so "batched == reference" checks the view.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from scrub.components import Component, Head
from scrub.data import Dataset
from scrub.engine.backends import HookBackend, backend_for
from scrub.engine.backends.tl import per_head_hooks
from scrub.engine.positions import asked_positions
from scrub.errors import ScheduleError
from scrub.plan import Schedule, ScheduleNode

__all__ = ["ReferenceEngine", "per_head_hooks"]


class ReferenceEngine:
    """Runs schedules node by node with hooks on the source model (see module docstring).

    Args:
        model: a TransformerLens ``HookedTransformer`` (or ``TransformerBridge``), or a
            HuggingFace causal LM of a supported family (`scrub.model.hf_modules`).
        data: the dataset every schedule indexes into.

    Raises:
        UnsupportedModelError: any other model, or an unsupported family or setting.
    """

    name = "reference"

    def __init__(self, model, data: Dataset) -> None:
        self.model = model
        self.data = data
        self.backend: HookBackend = backend_for(model)
        self.device = self.backend.device
        self.tokens = data.tokens.to(self.device)
        self.n_layers = self.backend.n_layers

    # ---- public -------------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, schedule: Schedule, positions: Optional[Sequence[int]] = None) -> Float[Tensor, "n pos vocab"]:
        """Logits of the scrubbed model for every reference row of ``schedule``.

        With ``positions``, only the logits at those positions (sorted), ``[n, q, vocab]``, as
        the batched engine gives them (this engine computes every position regardless).
        """
        if schedule.dataset is not self.data:
            raise ScheduleError(
                f"schedule {schedule.hypothesis!r} was planned on dataset {schedule.dataset.name!r}, "
                f"not on the dataset this engine was built for ({self.data.name!r})"
            )
        for component in {node.component for node in schedule.nodes()}:
            self.backend.check(component)  # before any forward pass
        with self.backend.session():
            return _only(self._value(schedule.root), positions)

    @torch.no_grad()
    def clean_logits(self, rows: Tensor, positions: Optional[Sequence[int]] = None) -> Float[Tensor, "n pos vocab"]:
        """Logits of the unscrubbed model on ``rows`` (only at ``positions``, sorted, when given)."""
        return _only(self.backend.logits(self.tokens[rows.to(self.device)]), positions)

    # ---- tree evaluation ----------------------------------------------------------------------

    def _value(self, node: ScheduleNode) -> Tensor:
        """The output of ``node``'s component (logits at the root), ``[n, pos, d]``."""
        if node.is_leaf:
            if node.per_position:
                return self._per_position(node.datum, lambda rows: self._clean_output(node.component, rows))
            return self._clean_output(node.component, node.datum)
        if node.copies is not None:
            values = {t: self._scrubbed(copy) for t, copy in node.copies.items()}
            first = next(iter(values.values()))
            out = torch.zeros_like(first)  # positions without a copy are never read by the parent
            for t, value in values.items():
                out[:, t] = value[:, t]
            return out
        return self._scrubbed(node)

    def _per_position(self, datum: Tensor, evaluate: Callable[[Tensor], Tensor]) -> Tensor:
        """Position ``t`` of the result is ``evaluate(datum[:, t])`` at ``t``."""
        columns = [evaluate(datum[:, t])[:, t] for t in range(datum.shape[1])]
        return torch.stack(columns, dim=1)

    def _scrubbed(self, node: ScheduleNode) -> Tensor:
        """A node with inputs: run on its other datum, adding each claimed child's difference."""
        other = node.other.to(self.device)
        children = node.children
        tokens = self.tokens[other]
        clean = self.backend.run(tokens, reads=[c.component for c in children])
        deltas: dict[str, Tensor] = {}
        heads: dict[tuple[str, int], Tensor] = {}  # post-norms: (port, layer) -> the claimed heads' differences
        for child in children:
            base = clean[child.component]  # [n, pos, d]
            diff = self._value(child) - base
            if child.edge.positions is not None:
                mask = torch.zeros(diff.shape[1], dtype=diff.dtype, device=diff.device)
                mask[list(child.edge.positions)] = 1.0
                diff = diff * mask[None, :, None]
            port = child.edge.port
            if self.backend.post_norms and isinstance(child.component, Head):
                key = (port, child.component.layer)
                heads[key] = heads[key] + diff if key in heads else diff
                continue
            deltas[port] = deltas[port] + diff if port in deltas else diff
        if heads:
            sums = self.backend.attention_sums(tokens, sorted({layer for _, layer in heads}))  # each [n, pos, d]
            for (port, layer), diff in heads.items():
                write = self.backend.attn_write
                delta = write(layer, sums[layer] + diff) - write(layer, sums[layer])  # [n, pos, d]
                deltas[port] = deltas[port] + delta if port in deltas else delta
        component = node.component
        patches = [(component, port, delta) for port, delta in deltas.items()]
        return self.backend.run(self.tokens[other], reads=[component], patches=patches)[component]

    def _clean_output(self, component: Component, rows: Tensor) -> Tensor:
        return self.backend.run(self.tokens[rows.to(self.device)], reads=[component])[component]


def _only(logits: Tensor, positions: Optional[Sequence[int]]) -> Tensor:
    """``logits [n, pos, vocab]`` at ``positions`` only (sorted): ``[n, q, vocab]``."""
    if positions is None:
        return logits
    return logits[:, list(asked_positions(positions, logits.shape[1]))]
