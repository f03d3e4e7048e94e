"""Sweeps over many rows in slices that fit a memory budget.

A sweep stores two passes over its rows (the base run and the source run), and each keeps every
layer's activations: the heads' outputs alone are ``n_layers * positions * n_heads * d_model``
numbers a row (GPT-2 small at 64 positions: ~45 MB a row and pass in float32). So a large
dataset is swept a slice of rows at a time, each slice with its own two passes, as many rows a
slice as the budget holds. Every number is the same as in one piece: a row's patched metric
depends on that row alone (its partner was drawn before slicing), and standard errors are
computed over all rows at the end.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from scrub.model import ModelView
from scrub.options import check_memory_budget
from scrub.patching.inputs import Inputs

__all__ = ["DEFAULT_BUDGET_MB", "check_budget", "bytes_per_row", "row_parts"]

DEFAULT_BUDGET_MB = 4096.0  # as the batched engine's default working-memory budget


def check_budget(value: Any) -> float:
    """``memory_budget_mb`` checked as the engine's option is (`scrub.options.check_memory_budget`),
    ``None`` read as `DEFAULT_BUDGET_MB`."""
    checked = check_memory_budget(value)
    return DEFAULT_BUDGET_MB if checked is None else checked


def bytes_per_row(view: ModelView, n_pos: int, passes: int = 2) -> int:
    """About what ``passes`` stored passes (`scrub.model.CleanPass`) take per row of ``n_pos``
    positions: per layer the residual stream before and after the heads, the attention's and the
    MLP's outputs, every head's output and its query, key and value; the embeddings, the final
    stream and the logits."""
    c = view.config
    per_layer = 4 * c.d_model + c.n_heads * c.d_model + 3 * c.n_heads * c.d_head
    per_position = c.n_layers * per_layer + 3 * c.d_model + view.W_U.shape[-1]
    return passes * n_pos * per_position * view.W_U.element_size()


def row_parts(inputs: Inputs, budget_mb: float, passes: int = 2) -> list[Inputs]:
    """``inputs`` in slices of consecutive rows, each as many rows as ``passes`` stored passes of
    them fit in ``budget_mb`` (at least one row); one slice when all rows fit."""
    n = len(inputs.data)
    per_part = max(1, int(budget_mb * 2**20 // bytes_per_row(inputs.view, inputs.data.n_pos, passes)))
    if per_part >= n:
        return [inputs]
    parts = []
    for start in range(0, n, per_part):
        index = torch.arange(start, min(n, start + per_part))
        parts.append(attrs.evolve(inputs, data=inputs.data.rows(index), corrupt=inputs.corrupt[index.to(inputs.corrupt.device)]))
    return parts
