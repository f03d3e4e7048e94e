"""The batched engine's clean cache: clean-pass quantities on the rows and positions schedules read.

Keys name what is stored: ``("resid_pre", l)``, ``("resid_mid", l)`` and ``("final",)`` are the
residual stream at the ports of heads, MLPs and the output; ``("head", l, h)`` and
``("mlp", l)`` are component outputs; ``("q", l, h)``, ``("k", l, h)`` and ``("v", l, h)`` are a
head's projected query, key and value (``d_head`` wide: what a head node reads through a port no
claimed child patches); ``("attn_sum", l)`` is, in a post-norm model (Gemma-2), layer ``l``'s
heads and bias summed before its post-attention norm, ``head_out[l].sum(2) + b_O[l]`` (what a
port fed by some of that layer's heads re-normalises, docs/post-norms.md); ``("embed",)`` and
``("pos",)`` are never stored (they are
computed for the rows asked for with `ModelView.embed` and `ModelView.pos_embed`). Each key keeps only the positions some read of
it needs, so a key read at the scored positions alone costs a fraction of a full table.
"""

from __future__ import annotations

from typing import Mapping

import torch
from jaxtyping import Float
from torch import Tensor

from scrub.components import MLP, Component, Embed, Head, Output, PosEmbed
from scrub.errors import ScheduleError
from scrub.model import CleanPass, ModelView

__all__ = [
    "Key", "CleanCache", "output_key", "port_key", "attn_sum_key", "cache_bytes", "distinct_rows", "COMPUTED", "PROJECTIONS",
]

Key = tuple
COMPUTED = {("embed",), ("pos",)}  # read from the weights directly, never cached


def output_key(component: Component) -> Key:
    """The key of what ``component`` writes into the residual stream."""
    if isinstance(component, Head):
        return ("head", component.layer, component.head)
    if isinstance(component, MLP):
        return ("mlp", component.layer)
    if isinstance(component, Embed):
        return ("embed",)
    if isinstance(component, PosEmbed):
        return ("pos",)
    raise ScheduleError(f"{component} writes nothing into the residual stream")


def port_key(component: Component) -> Key:
    """The key of the residual stream ``component`` reads through its ports."""
    if isinstance(component, Head):
        return ("resid_pre", component.layer)
    if isinstance(component, MLP):
        return ("resid_mid", component.layer)
    if isinstance(component, Output):
        return ("final",)
    raise ScheduleError(f"{component} has no ports")


def attn_sum_key(layer: int) -> Key:
    """The key of layer ``layer``'s heads and bias summed before its post-attention norm."""
    return ("attn_sum", layer)


PROJECTIONS = ("q", "k", "v")


def _read(view: ModelView, clean: CleanPass, key: Key) -> Tensor:
    """One cached quantity ``[b, p, width]`` out of a full clean pass."""
    kind = key[0]
    if kind == "attn_sum":  # the sum the clean pass normalised (`ModelView.attn_write`), in its order
        return clean.head_out[key[1]].sum(2) + view.attn_bias(key[1])  # [b, p, d_model]
    if kind in PROJECTIONS:
        return {"q": clean.head_q, "k": clean.head_k, "v": clean.head_v}[kind][key[1]][:, :, key[2]]
    if kind == "head":
        return clean.head_out[key[1]][:, :, key[2]]
    if kind == "mlp":
        return clean.mlp_out[key[1]]
    if kind == "resid_pre":
        return clean.resid_pre[key[1]]
    if kind == "resid_mid":
        return clean.resid_mid[key[1]]
    return clean.resid_final


def distinct_rows(rows: Tensor, n_data: int) -> Tensor:
    """The distinct values of ``rows`` (dataset row indices below ``n_data``), sorted: ``[u]``.

    A mark per dataset row, not a sort: linear in the number of reads."""
    used = torch.zeros(n_data, dtype=torch.bool, device=rows.device)
    used[rows] = True
    return used.nonzero().flatten()


def width(view: ModelView, key: Key) -> int:
    """Features per position of ``key``: ``d_head`` for projections, else ``d_model``."""
    return view.config.d_head if key[0] in PROJECTIONS else view.config.d_model


def cache_bytes(view: ModelView, needs: Mapping[Key, set[int]], n_rows: int) -> float:
    """Bytes the stored tables of ``needs`` take on ``n_rows`` rows."""
    cells = sum(len(pos) * width(view, key) for key, pos in needs.items() if key not in COMPUTED)
    return float(cells) * n_rows * view.dtype.itemsize


class CleanCache:
    """Clean-pass quantities for the rows some schedules read: only the keys and positions they need.

    The tables are preallocated and filled sub-batch by sub-batch, so building the cache never
    holds more than the tables plus one sub-batch's clean pass.

    Args:
        view: the model.
        tokens: every row of the dataset ``[N, p]``.
        rows: dataset rows to cache (any order, repeats allowed).
        needs: key -> positions read.
        sub_batch: rows per clean forward pass.
    """

    def __init__(self, view: ModelView, tokens: Tensor, rows: Tensor, needs: Mapping[Key, set[int]], sub_batch: int) -> None:
        self.view, self.tokens = view, tokens
        self.rows = distinct_rows(rows, tokens.shape[0])  # [u] sorted dataset rows
        self.slot = torch.full((tokens.shape[0],), -1, dtype=torch.long, device=rows.device)  # [N]
        self.slot[self.rows] = torch.arange(len(self.rows), device=rows.device)  # dataset row -> cache row
        n_pos, device = tokens.shape[1], view.device
        stored = sorted(key for key in needs if key not in COMPUTED)
        self.stored_positions: dict[Key, frozenset[int]] = {}
        self.stored_sorted: dict[Key, tuple[int, ...]] = {}
        self.positions: dict[Key, Tensor] = {}  # key -> [p_key] stored positions, sorted
        self.column: dict[Key, Tensor] = {}  # key -> [n_pos] column of each position (-1: absent)
        self.values: dict[Key, Tensor] = {}  # key -> [u, p_key, width]
        self._index_of: dict[tuple[int, ...], Tensor] = {}
        for key in stored:
            pos = torch.tensor(sorted(needs[key]), dtype=torch.long, device=device)
            column = torch.full((n_pos,), -1, dtype=torch.long, device=device)
            column[pos] = torch.arange(len(pos), device=device)
            self.stored_positions[key] = frozenset(needs[key])
            self.stored_sorted[key] = tuple(sorted(needs[key]))
            self.positions[key], self.column[key] = pos, column
            self.values[key] = torch.empty(len(self.rows), len(pos), width(view, key), dtype=view.dtype, device=device)
        for start in range(0, len(self.rows) if stored else 0, sub_batch):
            clean = view.clean_pass(tokens[self.rows[start : start + sub_batch]], logits=False)
            for key in stored:
                self.values[key][start : start + sub_batch] = _read(view, clean, key)[:, self.positions[key]]

    def index(self, rows: Tensor) -> Tensor:
        """Positions of dataset ``rows`` in the cache (a lookup, any shape)."""
        return self.slot[rows]

    def positions_tensor(self, positions: tuple[int, ...]) -> Tensor:
        """``positions`` as a long tensor on the device (memoised: the same few sets recur)."""
        found = self._index_of.get(positions)
        if found is None:
            found = self._index_of[positions] = torch.tensor(positions, dtype=torch.long, device=self.view.device)
        return found

    def _computed(self, key: Key, rows: Tensor, positions: tuple[int, ...], pos: Tensor) -> Float[Tensor, "n q d"]:
        """The embeddings, through the view's methods (so a family that scales its embedding, or
        whose positions are not added to the residual stream, is read the way the model reads it)."""
        view = self.view
        n = rows.shape[0]
        if key == ("pos",):  # the same in every row; only standard positions are in the residual
            if view.config.positional == "standard":
                return view.pos_embed(1, (positions[-1] if positions else 0) + 1)[:, pos].expand(n, -1, -1)  # [n, q, d]
            return torch.zeros(n, len(positions), view.config.d_model, dtype=view.dtype, device=view.device)
        toks = self.tokens[rows[:, None], pos] if rows.ndim == 1 else self.tokens[rows, pos]  # [n, q]
        return view.embed(toks)  # [n, q, d]

    def get(self, key: Key, rows: Tensor, positions: tuple[int, ...]) -> Float[Tensor, "n q d"]:
        """``key`` at ``positions`` (sorted) on ``rows``: ``[n, q, d]``.

        ``[n]`` rows give row ``i`` at every position; ``[n, p]`` rows (a per-position datum over
        every position of the dataset) take position ``t`` from row ``rows[i, t]``.
        """
        pos = self.positions_tensor(positions)  # [q]
        if rows.ndim == 2 and len(positions) < rows.shape[1]:
            rows = rows[:, pos]  # [n, q]: the row read at each asked position
        if key in COMPUTED:
            return self._computed(key, rows, positions, pos)
        if not self.stored_positions[key].issuperset(positions):
            raise ScheduleError(
                f"internal: the clean cache holds {key} at {sorted(self.stored_positions[key])}, "
                f"not at {list(positions)}; please report this"
            )
        table = self.values[key]  # [u, p_key, width]
        idx = self.index(rows)  # [n] or [n, q]
        if rows.ndim == 2:  # entry (i, t) is row idx[i, t] at column t: one gather of flat entries
            flat = (idx * table.shape[1] + self.column[key][pos]).flatten()  # [n * q]
            return table.flatten(0, 1).index_select(0, flat).unflatten(0, idx.shape)  # [n, q, width]
        stored = self.stored_sorted[key]
        first = stored.index(positions[0])
        if stored[first : first + len(positions)] == positions:  # a run of stored columns: a plain row gather
            return table.index_select(0, idx)[:, first : first + len(positions)]  # [n, q, width]
        return table[idx[:, None], self.column[key][pos]]  # [n, q, width]
