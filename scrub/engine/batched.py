"""The batched engine: one clean pass, then every tree node of a layer in one batched call.

Naive scrubbing runs a full forward pass per tree node. This engine instead

1. works out, for the output positions whose logits are asked for (the positions the metric
   reads), the positions at which every tree node is needed (`scrub.engine.positions`), and
   which nodes of all the schedules compute the same value (`scrub.engine.shared`);
2. runs one clean pass (through `scrub.model.ModelView`) over the dataset rows the schedules
   draw from, keeping only what they read, at the positions they read it
   (`scrub.engine.cache`): the residual stream at the patched ports of claimed components (on
   their "other" rows), a head's clean q/k/v projection at the ports nothing patches, and the
   outputs of claimed children and leaves;
3. evaluates the distinct nodes bottom-up by stage (embeddings, heads of layer 0, MLP 0, heads
   of layer 1, ...), each at its needed positions only: the nodes of one MLP across every
   schedule given are concatenated into one batched call, and so are the nodes of one head
   whose numbers of query positions fall in one power-of-two bucket (queries padded), so that
   the per-position copies of a node and the nodes below them (needed at ``t`` or ``0..t``)
   take a few calls per head, not one per copy;
4. assembles the final residual at each root, applies the final norm and unembedding.

Port inputs follow the residual decomposition of DESIGN.md section 1, exactly as the reference
engine does with hooks: ``resid_p(other) - sum_k out_k(other) + sum_k scrubbed_k``. In a
post-norm model (Gemma-2, docs/post-norms.md) a layer's attention writes ``N(sum_h o_h + b_O)``,
so the claimed heads of one layer ``l`` feeding a port enter through that layer's write,
recomputed for the node: ``N(S_l(other) + sum_k diff_k) - N(S_l(other))`` with ``S_l`` the cached
pre-norm sum (``("attn_sum", l)``), ``diff_k = scrubbed_k - out_k(other)`` and ``N`` applied by
`ModelView.attn_write`, per row and position, at the positions those heads are claimed at. Reference
rows are processed in chunks sized from ``memory_budget_mb``; results do not depend on the chunk.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Optional, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scrub.components import MLP, Component, Head, Output
from scrub.data import Dataset
from scrub.engine.backends.base import check_component
from scrub.engine.cache import CleanCache, Key, attn_sum_key, cache_bytes, distinct_rows, output_key, port_key
from scrub.engine.positions import Positions, asked_positions, node_positions, port_positions
from scrub.engine.shared import representatives
from scrub.errors import ScheduleError
from scrub.model import ModelView
from scrub.plan import Schedule, ScheduleNode

__all__ = ["BatchedEngine"]


def _stage(component: Component, n_layers: int) -> int:
    if isinstance(component, Output):
        return 2 * n_layers + 1
    return component.stage


class BatchedEngine:
    """Executes many schedules over one model and dataset, sharing one clean pass per chunk.

    Args:
        model: a TransformerLens ``HookedTransformer`` or a HuggingFace causal LM of a supported
            family (read with `ModelView.from_model`, in the model's own dtype), or a ModelView.
            Post-norm models (Gemma-2) are scrubbed as docs/post-norms.md states: a port fed by
            some heads of a layer re-normalises that layer's attention output.
        data: the dataset every schedule indexes into.
        memory_budget_mb: a rough bound on the engine's working memory: 60% holds the clean cache
            and 30% the node values of one chunk of reference rows, 10% one sub-batch of the
            clean pass. A cache that needs more than 60% may take up to 80%, with chunks sized
            from what is left; a larger one is built once per chunk (the clean pass repeats).
        device: where to compute (default: the model's device); dtype follows the model.
    """

    name = "batched"
    group_by_query_count = False  # benchmark switch: one attention call per distinct query count

    def __init__(self, model, data: Dataset, *, memory_budget_mb: float = 4096, device=None) -> None:
        view = model if isinstance(model, ModelView) else ModelView.from_model(model)
        if device is not None:
            view = view.to(device)
        self.view = view
        self.data = data
        self.tokens = data.tokens.to(view.device)
        self.memory_budget_mb = float(memory_budget_mb)
        self.n_layers = view.config.n_layers

    # ---- public -------------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, schedule: Schedule, positions: Optional[Sequence[int]] = None) -> Float[Tensor, "n q vocab"]:
        """Logits of the scrubbed model for every reference row of ``schedule`` (see `run_many`)."""
        return self.run_many([schedule], positions=positions)[0]

    @torch.no_grad()
    def run_many(
        self, schedules: Sequence[Schedule], positions: Optional[Sequence[int]] = None
    ) -> list[Float[Tensor, "n q vocab"]]:
        """Logits of each schedule (``[n, pos, vocab]``); all share one clean pass and shared nodes.

        Args:
            schedules: schedules planned on this engine's dataset, with the same number of
                reference rows.
            positions: the output positions whose logits are wanted (default: every position).
                Only what those logits depend on is computed (see `scrub.engine.positions`),
                and each result is ``[n, q, vocab]``: the logits at those positions, sorted.
        """
        if not schedules:
            return []
        n = schedules[0].n_rows
        for s in schedules:
            if s.dataset is not self.data:
                raise ScheduleError(
                    f"schedule {s.hypothesis!r} was planned on dataset {s.dataset.name!r}, not on the "
                    f"dataset this engine was built for ({self.data.name!r})"
                )
            if s.n_rows != n:
                raise ScheduleError(
                    f"run_many(): schedules must share their reference rows; {s.hypothesis!r} has "
                    f"{s.n_rows}, the first has {n}"
                )
        self._check_components(schedules)
        wanted = self._wanted(positions)
        needed = self._needed(schedules, wanted)
        needs, rows = self._cache_needs(schedules, needed)
        budget = self.memory_budget_mb * 2**20
        need = cache_bytes(self.view, needs, len(distinct_rows(rows, len(self.data))))
        shared = self._build_cache(needs, rows) if need <= 0.8 * budget else None  # one clean pass for all chunks
        # a cache above 60% of the budget leaves the chunks what it does not take
        available = 0.9 * budget - need if 0.6 * budget < need <= 0.8 * budget else 0.3 * budget
        same = representatives(schedules, needed)  # shared nodes hold one value: count them once
        size = self._rows_per_chunk(schedules, wanted, needed, available, same)
        outputs: list[list[Tensor]] = [[] for _ in schedules]
        for start in range(0, n, size):
            index = torch.arange(start, min(n, start + size), device=schedules[0].reference.device)
            chunk = [s.select(index) if size < n else s for s in schedules]
            chunk_needed = needed if size >= n else self._needed(chunk, wanted)
            cache = shared if shared is not None else self._build_cache(*self._cache_needs(chunk, chunk_needed))
            # sharing is decided per chunk: rows that agree in one chunk may differ in another
            chunk_same = same if size >= n else None
            for i, logits in enumerate(self._run_chunk(chunk, cache, wanted, chunk_needed, chunk_same)):
                outputs[i].append(logits)
        return [torch.cat(parts) for parts in outputs]

    @torch.no_grad()
    def clean_logits(self, rows: Int[Tensor, "n"], positions: Optional[Sequence[int]] = None) -> Float[Tensor, "n q vocab"]:
        """Logits of the unscrubbed model on ``rows`` (only at ``positions``, sorted, when given)."""
        size = self._clean_sub_batch()
        rows = rows.to(self.view.device)
        wanted = self._wanted(positions)
        pos = None if positions is None else torch.tensor(wanted, dtype=torch.long, device=self.view.device)
        parts = [self.view.forward(self.tokens[rows[i : i + size]], positions=pos) for i in range(0, len(rows), size)]
        return torch.cat(parts) if parts else self._logits(0, len(wanted))

    def chunk_size(
        self, schedules: Sequence[Schedule], positions: Optional[Sequence[int]] = None, node_bytes: Optional[float] = None
    ) -> int:
        """Reference rows per chunk so that one chunk's node values stay within ``node_bytes``
        (default: 30% of the memory budget); with ``positions``: when only the logits there are
        asked for."""
        wanted = self._wanted(positions)
        available = self.memory_budget_mb * 2**20 * 0.3 if node_bytes is None else node_bytes
        needed = self._needed(schedules, wanted)
        return self._rows_per_chunk(schedules, wanted, needed, available, representatives(schedules, needed))

    def _rows_per_chunk(
        self, schedules: Sequence[Schedule], wanted: Positions, needed: dict[int, Positions], available: float,
        same: dict[int, int],
    ) -> int:
        c = self.view.config
        # node values, in positions: a node that shares another's value (``same``) holds no copy
        cells = sum(len(at) for key, at in needed.items() if same.get(key, key) == key)
        # per reference row: every node keeps its value, and a batched call holds ~4 inputs/outputs
        per_row = (cells + 4 * max(self.data.n_pos, cells // 4)) * c.d_model
        per_row += len(schedules) * len(wanted) * c.d_vocab_out  # the logits
        per_row *= self.view.dtype.itemsize
        return max(1, min(schedules[0].n_rows, int(available // per_row)))

    def _check_components(self, schedules: Sequence[Schedule]) -> None:
        """Refuse a component the model lacks (before any forward pass), as the reference engine does."""
        c = self.view.config
        seen = {node.component for s in schedules for node in s.root.walk()}
        for component in seen:
            check_component(
                component, c.n_layers, c.n_heads, not c.attn_only, c.positional == "standard", f"the {c.family} model"
            )

    # ---- planning what to compute -------------------------------------------------------------

    def _wanted(self, positions: Optional[Sequence[int]]) -> Positions:
        return asked_positions(positions, self.data.n_pos)

    def _needed(self, schedules: Sequence[Schedule], wanted: Positions) -> dict[int, Positions]:
        causal = self.view.config.causal
        found: dict[int, Positions] = {}
        for s in schedules:
            found.update(node_positions(s.root, wanted, self.data.n_pos, causal))
        return found

    def _cache_needs(
        self, schedules: Sequence[Schedule], needed: dict[int, Positions]
    ) -> tuple[dict[Key, set[int]], Tensor]:
        """The clean-pass quantities the schedules read (their nodes needed at ``needed``), at
        which positions, and on which rows."""
        causal, n_pos = self.view.config.causal, self.data.n_pos
        needs: dict[Key, set[int]] = defaultdict(set)
        rows: list[Tensor] = [torch.zeros(0, dtype=torch.long, device=self.data.device)]
        for s in schedules:
            for node in s.root.walk():
                at = needed.get(id(node))
                if at is None or node.copies is not None:
                    continue
                if node.is_leaf:
                    needs[output_key(node.component)].update(at)
                    datum = node.datum
                    rows.append(datum.flatten() if datum.ndim == 1 else datum[:, list(at)].flatten())
                    continue
                fed = _fed_ports(node, needed)
                for port, read in port_positions(node.component, at, n_pos, causal).items():
                    if port in fed or not isinstance(node.component, Head):
                        needs[port_key(node.component)].update(read)
                    else:  # nothing patches this port: the head reads its clean projection
                        needs[(port, node.component.layer, node.component.head)].update(read)
                for child in node.children:
                    if id(child) in needed:
                        needs[output_key(child.component)].update(needed[id(child)])
                        if self._renormalises(child):  # the layer's pre-norm sum, where the head is claimed
                            needs[attn_sum_key(child.component.layer)].update(needed[id(child)])
                rows.append(node.other)
        return dict(needs), torch.cat(rows)

    def _clean_sub_batch(self) -> int:
        """Rows per clean forward pass: it holds every layer's activations (and the per-head
        attention intermediates) for its rows, within 10% of the budget."""
        c = self.view.config
        per_pos = (4 * c.n_layers + 2 * c.n_layers * c.n_heads + 4) * c.d_model + c.d_vocab_out
        per_pos += c.n_heads * (self.data.n_pos + 3 * c.d_head)  # attention scores and q, k, v
        per_row = per_pos * self.data.n_pos * self.view.dtype.itemsize
        return max(1, int(self.memory_budget_mb * 2**20 * 0.1 // per_row))

    def _build_cache(self, needs: dict[Key, set[int]], rows: Tensor) -> CleanCache:
        return CleanCache(self.view, self.tokens, rows.to(self.view.device), needs, self._clean_sub_batch())

    def _logits(self, n: int, q: int) -> Tensor:
        return torch.empty(n, q, self.view.config.d_vocab_out, dtype=self.view.dtype, device=self.view.device)

    # ---- one chunk ----------------------------------------------------------------------------

    def _run_chunk(
        self, schedules: Sequence[Schedule], cache: CleanCache, wanted: Positions, needed: dict[int, Positions],
        same: Optional[dict[int, int]] = None,
    ) -> list[Tensor]:
        """Each schedule's logits on one chunk: every needed node at its needed positions, each
        distinct value computed once (`scrub.engine.shared`; ``same``: already found for these
        schedules)."""
        if same is None:
            same = representatives(schedules, needed)  # id(node) -> id(the node whose value it shares)
        nodes = [node for s in schedules for node in s.root.walk() if id(node) in needed]
        device = self.view.device

        values: dict[int, Tensor] = {}  # id(node) -> [n, len(needed positions), d]

        def share(group: Sequence[ScheduleNode]) -> None:
            for node in group:
                if same[id(node)] != id(node):
                    values[id(node)] = values[same[id(node)]]

        leaves = [node for node in nodes if node.is_leaf]
        for node in leaves:  # leaves first: read straight from the cache
            if same[id(node)] == id(node):
                values[id(node)] = cache.get(output_key(node.component), node.datum.to(device), needed[id(node)])
        share(leaves)
        by_stage: dict[int, list[ScheduleNode]] = defaultdict(list)
        wrappers: dict[int, list[ScheduleNode]] = defaultdict(list)
        for node in nodes:
            if not node.is_leaf:
                stage = _stage(node.component, self.n_layers)
                (by_stage if node.copies is None else wrappers)[stage].append(node)
        for stage in sorted(by_stage):
            group = by_stage[stage]
            self._evaluate_stage([n for n in group if same[id(n)] == id(n)], cache, values, needed)
            share(group)
            for wrapper in wrappers[stage]:
                if same[id(wrapper)] == id(wrapper):
                    values[id(wrapper)] = _assemble_copies(wrapper, values, needed)
            share(wrappers[stage])
        return [values[id(s.root)] if wanted else self._logits(s.n_rows, 0) for s in schedules]

    def _evaluate_stage(
        self, nodes: list[ScheduleNode], cache: CleanCache, values: dict[int, Tensor], needed: dict[int, Positions]
    ) -> None:
        """Evaluate nodes of one stage in batched calls: heads by (head, number of query
        positions), MLPs and the output with every (row, position) of every node in one batch."""
        groups: dict[tuple, list[ScheduleNode]] = defaultdict(list)
        for node in nodes:
            c = node.component
            if isinstance(c, Head):
                key = (Head, c.head, self._query_bucket(len(needed[id(node)])))
            else:
                key = (type(c), 0, 0)
            groups[key].append(node)
        for (kind, _, _), group in groups.items():
            if kind is Head:
                outs = self._heads(group, cache, values, needed)
            elif kind in (MLP, Output):
                inputs = [self._port_input(node, "in", needed[id(node)], cache, values, needed) for node in group]
                outs = self._pointwise(kind, group, inputs)
            else:
                raise ScheduleError(f"{kind.__name__} has no ports; it can only be a leaf")
            for node, part in zip(group, outs):
                values[id(node)] = part

    def _query_bucket(self, n_queries: int) -> int:
        """The group a head node needed at ``n_queries`` positions is evaluated in.

        Nodes of one head whose query counts fall in one bucket ``(2^(j-1), 2^j]`` share one
        attention call, their queries padded to the largest count in it (at most twice the work
        of the node itself): per-position copies of a node (needed at ``(t,)``) and the nodes
        below them (needed at ``0..t``, one count per copy) take about ``log2(n_pos)`` calls per
        head instead of one per copy. ``group_by_query_count`` (a benchmark switch) restores
        one call per distinct count."""
        if self.group_by_query_count:
            return n_queries
        return 1 << max(0, n_queries - 1).bit_length()

    def _heads(
        self, group: list[ScheduleNode], cache: CleanCache, values: dict[int, Tensor], needed: dict[int, Positions]
    ) -> list[Tensor]:
        """Nodes of one head (query counts in one bucket): each port's projection either from the
        clean cache (no claimed child patches it) or computed from the patched input, then one
        `ModelView.head_output` call for the whole group, queries padded to the largest count
        (a padded query repeats the node's last one; its output is dropped)."""
        view, device = self.view, self.view.device
        layer, head = group[0].component.layer, group[0].component.head
        reads = [port_positions(node.component, needed[id(node)], self.data.n_pos, view.config.causal) for node in group]
        fed = [_fed_ports(node, needed) for node in group]
        sizes = [node.other.shape[0] for node in group]
        projected: dict[str, list[Tensor]] = {}
        for port in ("q", "k", "v"):
            parts: list = [None] * len(group)
            todo = [i for i in range(len(group)) if port in fed[i]]
            for i, node in enumerate(group):
                if port not in fed[i]:
                    parts[i] = cache.get((port, layer, head), node.other.to(device), reads[i][port])  # [n, p, e]
            if todo:  # patched inputs: every (row, position) through one projection
                xs = [self._port_input(group[i], port, reads[i][port], cache, values, needed) for i in todo]
                flat = torch.cat([x.reshape(-1, 1, x.shape[-1]) for x in xs])  # [sum n*p, 1, d]
                at = torch.cat([cache.positions_tensor(reads[i][port]).repeat(sizes[i]) for i in todo])  # [sum n*p]
                out = view.head_projection(layer, head, port, flat, at[:, None])  # [sum n*p, 1, e]
                for i, x, part in zip(todo, xs, torch.split(out, [x.shape[0] * x.shape[1] for x in xs])):
                    parts[i] = part.reshape(x.shape[0], x.shape[1], -1)  # [n, p, e]
            projected[port] = parts
        n_keys = max(k.shape[1] for k in projected["k"])
        counts = [len(needed[id(node)]) for node in group]
        n_q = max(counts)
        q = torch.cat([_repeat_last(x, n_q) for x in projected["q"]])  # [sum n, n_q, e]
        k, v = (torch.cat([_pad_positions(x, n_keys) for x in projected[p]]) for p in ("k", "v"))  # [sum n, keys, e]
        q_pos = torch.cat(
            [
                cache.positions_tensor(_padded(needed[id(node)], n_q)).expand(n, -1)
                for n, node in zip(sizes, group)
            ]
        )  # [sum n, n_q]
        out = view.head_output(layer, head, q, k, v, q_positions=q_pos)  # [sum n, n_q, d]
        return [part if c == n_q else part[:, :c] for part, c in zip(torch.split(out, sizes), counts)]

    def _pointwise(self, kind: type, group: list[ScheduleNode], inputs: list[Tensor]) -> list[Tensor]:
        """MLPs and the output act position by position: every (row, position) in one flat batch."""
        shapes = [x.shape[:2] for x in inputs]
        flat = torch.cat([x.reshape(-1, 1, x.shape[-1]) for x in inputs])  # [sum n*q, 1, d]
        if kind is MLP:
            out = self.view.mlp(group[0].component.layer, flat)  # [sum n*q, 1, d]
        else:
            out = self.view.unembed(flat)  # [sum n*q, 1, vocab]
        parts = torch.split(out, [a * b for a, b in shapes])
        return [part.reshape(a, b, -1) for part, (a, b) in zip(parts, shapes)]

    def _port_input(
        self,
        node: ScheduleNode,
        port: str,
        read: Positions,
        cache: CleanCache,
        values: dict[int, Tensor],
        needed: dict[int, Positions],
    ) -> Tensor:
        """``resid_p(other) - sum_k out_k(other) + sum_k scrubbed_k`` at port ``port`` of ``node``,
        at the positions ``read`` the port is read (``[n, q, d]``)."""
        other = node.other.to(self.view.device)
        x = cache.get(port_key(node.component), other, read)  # [n, q, d]
        heads: dict[int, list[tuple[Tensor, Positions]]] = defaultdict(list)  # post-norms: layer -> differences
        for child in node.children:
            at_child = needed.get(id(child))
            if child.edge.port != port or at_child is None:
                continue  # another port, or needed at no position this port reads
            diff = values[id(child)] - cache.get(output_key(child.component), other, at_child)  # [n, q_child, d]
            if self._renormalises(child):
                heads[child.component.layer].append((diff, at_child))
            else:
                x = _add_at(x, read, diff, at_child, cache)
        for layer, diffs in heads.items():
            delta, at = self._attention_delta(layer, diffs, other, cache)  # [n, q_at, d]
            x = _add_at(x, read, delta, at, cache)
        return x

    def _renormalises(self, child: ScheduleNode) -> bool:
        """Whether ``child`` enters its parent's port through its layer's post-attention norm."""
        return self.view.config.post_norms and isinstance(child.component, Head)

    def _attention_delta(
        self, layer: int, diffs: list[tuple[Tensor, Positions]], other: Tensor, cache: CleanCache
    ) -> tuple[Tensor, Positions]:
        """Post-norms: how the attention write of ``layer`` changes when the claimed heads' outputs
        replace theirs on ``other`` (``diffs``: ``(scrubbed - clean, positions)`` per head), at the
        positions some head is claimed at: ``N(S + sum_k diff_k) - N(S)``, never ``sum_k diff_k``
        after the norm. Returns the change ``[n, q_at, d]`` and its positions."""
        at = tuple(sorted({t for _, positions in diffs for t in positions}))
        before = cache.get(attn_sum_key(layer), other, at)  # [n, q_at, d]: sum_h o_h(other) + b_O
        after = before
        for diff, positions in diffs:
            after = _add_at(after, at, diff, positions, cache)  # [n, q_at, d]
        write = self.view.attn_write
        return write(layer, after, with_bias=False) - write(layer, before, with_bias=False), at  # [n, q_at, d]


def _add_at(x: Tensor, read: Positions, diff: Tensor, at: Positions, cache: CleanCache) -> Tensor:
    """``x [n, q, d]`` (at positions ``read``) plus ``diff [n, q_at, d]`` at positions ``at`` (within ``read``)."""
    if at == read:
        return x + diff
    # the difference covers part of what the port reads (a position-restricted edge)
    return x.index_add(1, cache.positions_tensor(tuple(read.index(t) for t in at)), diff)


def _fed_ports(node: ScheduleNode, needed: dict[int, Positions]) -> set[str]:
    """The ports of ``node`` that some needed child patches."""
    return {child.edge.port for child in node.children if id(child) in needed}


def _pad_positions(x: Tensor, n: int) -> Tensor:
    """``x [b, p, d]`` padded with zeros to ``n`` positions (keys a causal query never sees)."""
    if x.shape[1] == n:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], n - x.shape[1], x.shape[2])], dim=1)


def _padded(positions: Positions, n: int) -> Positions:
    """``positions`` with its last one repeated up to ``n`` entries."""
    return positions + (positions[-1],) * (n - len(positions))


def _repeat_last(x: Tensor, n: int) -> Tensor:
    """``x [b, p, e]`` with its last position repeated up to ``n`` positions (padded queries)."""
    if x.shape[1] == n:
        return x
    return torch.cat([x, x[:, -1:].expand(-1, n - x.shape[1], -1)], dim=1)


def _assemble_copies(wrapper: ScheduleNode, values: dict[int, Tensor], needed: dict[int, Positions]) -> Tensor:
    """Position ``t`` of a per-position node comes from its copy for ``t`` (needed at ``t`` only)."""
    parts = [values[id(wrapper.copies[t])] for t in needed[id(wrapper)]]  # each [n, 1, d]
    return torch.cat(parts, dim=1)  # [n, q, d]
