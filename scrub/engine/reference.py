"""The reference engine: the slow, obviously-correct oracle.

It executes a `Schedule` with TransformerLens hooks on full forward passes, one tree node at a
time, exactly as DESIGN.md section 1 states. For a tree node ``n`` reading component ``C``
through port ``p``, with other datum ``o`` and claimed children ``k``:

    input_p = resid_p(o) - sum_k out_k(o) + sum_k scrubbed_k      (at the positions each edge claims)

The engine runs the model on ``o`` with a hook that adds ``scrubbed_k - out_k(o)`` to ``C``'s
port input (nothing else is patched in that pass) and reads ``C``'s output from the same pass.
A leaf runs its whole upstream on its own datum (per position: position ``t`` on the row drawn for
``t``). Speed is not a goal here; being easy to check is.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from scrub.components import MLP, Component, Head, Output, hooks
from scrub.data import Dataset
from scrub.engine.positions import asked_positions
from scrub.errors import ScheduleError, UnsupportedModelError
from scrub.plan import Schedule, ScheduleNode

__all__ = ["ReferenceEngine", "per_head_hooks"]


@contextlib.contextmanager
def per_head_hooks(model) -> Iterator[None]:
    """Turn on TransformerLens's per-head input/output hooks; restore settings and clear hooks after."""
    cfg = model.cfg
    saved = (cfg.use_split_qkv_input, cfg.use_attn_result, cfg.use_hook_mlp_in, cfg.use_attn_in)
    try:
        if cfg.use_attn_in:
            model.set_use_attn_in(False)
        model.set_use_split_qkv_input(True)
        model.set_use_attn_result(True)
        if not cfg.attn_only:
            model.set_use_hook_mlp_in(True)
        yield
    finally:
        model.reset_hooks(including_permanent=False)
        cfg.use_split_qkv_input, cfg.use_attn_result, cfg.use_hook_mlp_in, cfg.use_attn_in = saved


class ReferenceEngine:
    """Runs schedules node by node with TransformerLens hooks (see module docstring).

    Args:
        model: a TransformerLens ``HookedTransformer``.
        data: the dataset every schedule indexes into.
    """

    name = "reference"

    def __init__(self, model, data: Dataset) -> None:
        self.model = model
        self.data = data
        self.device = next(model.parameters()).device
        self.tokens = data.tokens.to(self.device)
        self.n_layers = model.cfg.n_layers

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
        with per_head_hooks(self.model):
            return _only(self._value(schedule.root), positions)

    @torch.no_grad()
    def clean_logits(self, rows: Tensor, positions: Optional[Sequence[int]] = None) -> Float[Tensor, "n pos vocab"]:
        """Logits of the unscrubbed model on ``rows`` (only at ``positions``, sorted, when given)."""
        return _only(self.model(self.tokens[rows.to(self.device)]), positions)

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
        clean = self._run(other, reads=[hooks.output_of(c.component) for c in children])
        deltas: dict[str, Tensor] = {}
        for child in children:
            base = _select(child.component, clean[hooks.output_of(child.component)])  # [n, pos, d]
            diff = self._value(child) - base
            if child.edge.positions is not None:
                mask = torch.zeros(diff.shape[1], dtype=diff.dtype, device=diff.device)
                mask[list(child.edge.positions)] = 1.0
                diff = diff * mask[None, :, None]
            port = child.edge.port
            deltas[port] = deltas[port] + diff if port in deltas else diff
        component = node.component
        patches = [(self._port_hook(component, port), _adder(component, delta)) for port, delta in deltas.items()]
        read = self._read_hook(component)
        result = self._run(other, reads=[read], patches=patches)
        return _select(component, result[read])

    # ---- TransformerLens plumbing -------------------------------------------------------------

    def _clean_output(self, component: Component, rows: Tensor) -> Tensor:
        name = hooks.output_of(component)
        return _select(component, self._run(rows.to(self.device), reads=[name])[name])

    def _run(self, rows: Tensor, reads: list[str], patches=()) -> dict[str, Tensor]:
        """Forward on ``rows`` with ``patches`` applied; return the hooks in ``reads`` and logits."""
        store: dict[str, Tensor] = {}

        def keep(value: Tensor, hook) -> None:
            store[hook.name] = value.detach().clone()

        fwd = list(patches) + [(name, keep) for name in set(reads) if name != "logits"]
        with self.model.hooks(fwd_hooks=fwd):
            logits = self.model(self.tokens[rows])
        store["logits"] = logits
        missing = [name for name in reads if name not in store]
        if missing:
            raise UnsupportedModelError(
                f"hooks {missing} did not fire on {type(self.model).__name__}; the reference engine "
                f"needs a HookedTransformer with per-head hooks (use_split_qkv_input, use_attn_result)"
            )
        return store

    def _port_hook(self, component: Component, port: str) -> str:
        if isinstance(component, Head):
            return hooks.head_input(component.layer, port)
        if isinstance(component, MLP):
            return hooks.mlp_in(component.layer)
        if isinstance(component, Output):
            return hooks.final_resid(self.n_layers)
        raise ScheduleError(f"{component} has no ports, so nothing can be patched into it")

    def _read_hook(self, component: Component) -> str:
        return "logits" if isinstance(component, Output) else hooks.output_of(component)


def _only(logits: Tensor, positions: Optional[Sequence[int]]) -> Tensor:
    """``logits [n, pos, vocab]`` at ``positions`` only (sorted): ``[n, q, vocab]``."""
    if positions is None:
        return logits
    return logits[:, list(asked_positions(positions, logits.shape[1]))]


def _select(component: Component, value: Tensor) -> Tensor:
    """A head's slice of a per-head hook value; other hook values as they are."""
    if isinstance(component, Head):
        return value[:, :, component.head]  # [n, pos, d_model]
    return value


def _adder(component: Component, delta: Tensor):
    """A hook that adds ``delta`` ``[n, pos, d]`` to ``component``'s port input."""

    def add(value: Tensor, hook) -> Tensor:
        value = value.clone()
        if isinstance(component, Head):
            value[:, :, component.head] += delta  # value: [n, pos, n_heads, d_model]
        else:
            value += delta  # value: [n, pos, d_model]
        return value

    return add

