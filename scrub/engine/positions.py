"""Which positions of each tree node's output a scrub actually reads (pure; no tensors computed).

A metric that scores only some positions (the built-in ones read the positions of the loss
mask) needs the logits there and nowhere else. That need propagates down the tree exactly:

* the output and MLPs act position by position: their input is needed where their output is;
* a head's output at query positions ``P`` needs its q input at ``P`` and its k and v inputs at
  every key those queries see (``0..max(P)`` in a causal model, every position otherwise);
* a child feeding a port that is read at ``Q`` is needed at ``Q``, or at the part of ``Q`` its
  edge claims when the edge is restricted to some positions (elsewhere the "other" value stands);
* copy ``t`` of a per-position node holds position ``t`` of its output only, so it is needed at
  ``(t,)`` when its node is needed at ``t``, and not at all otherwise.

A node needed nowhere is not evaluated, and nothing below it is. The batched engine computes
every node at its needed positions only; values at the other positions never reach the metric,
so the numbers there are unchanged (the engine-versus-reference tests check it).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from scrub.components import Head
from scrub.errors import ScheduleError
from scrub.plan import ScheduleNode

__all__ = ["Positions", "asked_positions", "port_positions", "node_positions"]

Positions = tuple[int, ...]  # sorted, distinct


def asked_positions(positions: Optional[Sequence[int]], n_pos: int) -> Positions:
    """``positions`` sorted and distinct (``None``: every one of ``0..n_pos-1``).

    Raises:
        ScheduleError: a position outside the dataset's ``0..n_pos-1``.
    """
    if positions is None:
        return tuple(range(n_pos))
    asked = tuple(sorted({int(t) for t in positions}))
    if asked and not (0 <= asked[0] and asked[-1] < n_pos):
        raise ScheduleError(f"positions {list(asked)} fall outside the dataset's 0..{n_pos - 1}")
    return asked


def port_positions(component, needed: Positions, n_pos: int, causal: bool) -> dict[str, Positions]:
    """Positions at which each port of ``component`` is read when its output is needed at ``needed``."""
    if isinstance(component, Head):
        keys = tuple(range(max(needed) + 1)) if causal else tuple(range(n_pos))
        return {"q": needed, "k": keys, "v": keys}
    return {port: needed for port in component.ports}


def _restrict(read: Positions, claimed: Iterable[int] | None) -> Positions:
    if claimed is None:
        return read
    keep = set(claimed)
    return tuple(t for t in read if t in keep)


def node_positions(root: ScheduleNode, wanted: Positions, n_pos: int, causal: bool) -> dict[int, Positions]:
    """``id(node) -> positions`` for every node of the tree under ``root`` that is needed.

    ``wanted`` are the output positions whose logits are asked for. Nodes absent from the
    result are needed at no position.
    """
    found: dict[int, Positions] = {}
    stack: list[tuple[ScheduleNode, Positions]] = [(root, tuple(sorted(set(wanted))))]
    while stack:
        node, needed = stack.pop()
        if not needed:
            continue
        found[id(node)] = needed
        if node.is_leaf:
            continue
        if node.copies is not None:
            stack.extend((copy, (t,)) for t, copy in node.copies.items() if t in needed)
            continue
        ports = port_positions(node.component, needed, n_pos, causal)
        for child in node.children:
            stack.append((child, _restrict(ports[child.edge.port], child.edge.positions)))
    return found
