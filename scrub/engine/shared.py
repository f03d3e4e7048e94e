"""Tree nodes that compute the same value, across the schedules of one batched call (pure).

Variants of one hypothesis planned with one seed (leave-one-out, alone, paths, pairs) share
much of their trees: every draw made before the first claim a variant drops is the same, so
the subtrees sampled before it are the same nodes with the same rows. A node's value is a
function of what it reads, so two nodes compute the same value when they have

* (leaves) the same component, the same datum and the same needed positions;
* (nodes with inputs) the same component, the same "other" rows, the same needed positions and,
  port by port in claim order, children that compute the same values (and the same edge
  positions);
* (per-position nodes) the same copies at the needed positions.

`representatives` maps every needed node to the first node with its value; the engine
evaluates representatives only. Rows are compared by content (a hash, confirmed by
`torch.equal`), so equal values are never confused.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from scrub.engine.positions import Positions
from scrub.plan import Schedule, ScheduleNode

__all__ = ["representatives"]


def _digest(host: Tensor) -> tuple:
    """A hash of a CPU tensor's shape and contents (equal tensors, equal digests)."""
    return (tuple(host.shape), hash(host.numpy().tobytes()))


class _RowsInterner:
    """One integer per distinct row-index tensor (by content)."""

    def __init__(self) -> None:
        self._by_id: dict[int, int] = {}
        self._by_hash: dict[tuple, list[tuple[int, Tensor]]] = {}
        self._count = 0

    def token(self, rows: Tensor) -> int:
        found = self._by_id.get(id(rows))
        if found is not None:
            return found
        host = rows.detach().to("cpu").contiguous()
        key = _digest(host)
        bucket = self._by_hash.setdefault(key, [])
        for token, other in bucket:
            if torch.equal(other, host):
                break
        else:
            token = self._count
            self._count += 1
            bucket.append((token, host))
        self._by_id[id(rows)] = token
        return token


def representatives(schedules: Sequence[Schedule], needed: dict[int, Positions]) -> dict[int, int]:
    """``id(node) -> id(first node computing the same value)`` for every needed node."""
    rows = _RowsInterner()
    canonical: dict[tuple, int] = {}  # signature -> signature id
    first: dict[int, int] = {}  # signature id -> id(first node)
    found: dict[int, int] = {}

    def visit(node: ScheduleNode) -> int:
        at = needed[id(node)]
        if node.is_leaf:
            signature: tuple = ("leaf", node.component, at, rows.token(node.datum))
        elif node.copies is not None:
            signature = ("copies", node.component, at, tuple(visit(node.copies[t]) for t in at))
        else:
            children = tuple(
                (visit(child), child.edge.port, child.edge.positions) for child in node.children if id(child) in needed
            )
            signature = ("node", node.component, at, rows.token(node.other), children)
        sig = canonical.setdefault(signature, len(canonical))
        found[id(node)] = first.setdefault(sig, id(node))
        return sig

    for schedule in schedules:
        if id(schedule.root) in needed:
            visit(schedule.root)
    return found
