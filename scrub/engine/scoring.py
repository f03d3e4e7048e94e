"""Scoring schedules: an engine's logits, chunk by chunk, through the metric to per-row values.

This is where the dataset's trip ends: the entry point hands it to planning, the schedules carry
it to the engine, and here the engine's logits and the dataset's rows meet the metric. Nothing
here returns to the entry point's module: `scrub.api` receives per-row numbers only.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scrub.metrics import Metric
from scrub.plan import Schedule

__all__ = ["score_schedules", "score_clean", "at_every_position"]


def at_every_position(logits: Float[Tensor, "n q v"], positions: Optional[Sequence[int]], n_pos: int) -> Float[Tensor, "n p v"]:
    """Logits computed at ``positions`` only (``[n, q, vocab]``) laid out at every position
    (``[n, n_pos, vocab]``), NaN where they were not computed; as they are when ``positions`` is None.
    Always float32: a model may run in bfloat16 or float16, metrics are computed in float32."""
    logits = logits.float()  # [n, q, v]
    if positions is None:
        return logits
    full = logits.new_full((logits.shape[0], n_pos, logits.shape[2]), float("nan"))  # [n, p, v]
    full[:, list(positions)] = logits
    return full


def score_schedules(engine, schedules: Sequence[Schedule], metric: Metric, batch_size: Optional[int]) -> list[Float[Tensor, "n"]]:
    """Per-row metric values ``[n]`` of each schedule, in chunks of ``batch_size`` reference rows.

    Every schedule is run by ``engine`` (``run_many`` when it has one: one clean pass for all of
    them), at the positions the metric reads only; the metric sees the scrubbed logits laid out at
    every position, and the clean logits when it needs them.
    """
    data = engine.data
    n = schedules[0].n_rows
    size = batch_size or n
    out: list[list[Tensor]] = [[] for _ in schedules]
    for start in range(0, n, size):
        rows = torch.arange(start, min(n, start + size))
        chunk = [s.select(rows) for s in schedules]
        batch = data.rows(chunk[0].reference)
        positions = metric.positions(batch)  # None: the metric reads every position
        clean = None
        if metric.needs_clean:
            clean = at_every_position(engine.clean_logits(chunk[0].reference, positions), positions, data.n_pos)
        if hasattr(engine, "run_many"):
            logits = engine.run_many(chunk, positions=positions)
        else:
            logits = [engine.run(s, positions=positions) for s in chunk]
        for i, lg in enumerate(logits):
            out[i].append(metric(at_every_position(lg, positions, data.n_pos), batch, clean).cpu())
    return [torch.cat(parts) for parts in out]


def score_clean(engine, reference: Int[Tensor, "n"], metric: Metric, batch_size: Optional[int]) -> Float[Tensor, "n"]:
    """Per-row metric values ``[n]`` of the unscrubbed model on the ``reference`` rows."""
    data = engine.data
    size = batch_size or len(reference)
    parts = []
    for start in range(0, len(reference), size):
        rows = reference[start : start + size]
        batch = data.rows(rows)
        positions = metric.positions(batch)
        logits = at_every_position(engine.clean_logits(rows, positions), positions, data.n_pos)
        parts.append(metric(logits, batch, logits).cpu())
    return torch.cat(parts)
