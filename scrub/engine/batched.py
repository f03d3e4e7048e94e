"""The batched engine: one clean pass, then every tree node of a layer in one batched call.

Naive scrubbing runs a full forward pass per tree node. This engine instead

1. runs one clean pass (through `scrub.model.ModelView`) over the dataset rows the schedules
   draw from, keeping only what they need: the residual stream at the ports of claimed
   components (on their "other" rows) and the outputs of claimed children and leaves (on the
   rows that read them);
2. evaluates tree nodes bottom-up by stage (embeddings, heads of layer 0, MLP 0, heads of
   layer 1, ...): all nodes of one stage, across every schedule given, are concatenated into
   one call of the component function (each row carries its own head index);
3. assembles the final residual at each root, applies the final norm and unembedding.

Port inputs follow the residual decomposition of DESIGN.md section 1, exactly as the reference
engine does with hooks: ``resid_p(other) - sum_k out_k(other) + sum_k scrubbed_k``. Reference
rows are processed in chunks sized from ``memory_budget_mb``; results do not depend on the chunk.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scrub.components import MLP, Component, Embed, Head, Output, PosEmbed
from scrub.data import Dataset
from scrub.errors import ScheduleError
from scrub.model import CleanPass, ModelView
from scrub.plan import Schedule, ScheduleNode

__all__ = ["BatchedEngine"]

Key = tuple  # what the clean cache holds: ("resid_pre", l), ("head", l, h), ("final",), ...


def _output_key(component: Component) -> Key:
    if isinstance(component, Head):
        return ("head", component.layer, component.head)
    if isinstance(component, MLP):
        return ("mlp", component.layer)
    if isinstance(component, Embed):
        return ("embed",)
    if isinstance(component, PosEmbed):
        return ("pos",)
    raise ScheduleError(f"{component} writes nothing into the residual stream")


def _port_key(component: Component) -> Key:
    if isinstance(component, Head):
        return ("resid_pre", component.layer)
    if isinstance(component, MLP):
        return ("resid_mid", component.layer)
    if isinstance(component, Output):
        return ("final",)
    raise ScheduleError(f"{component} has no ports")


def _read(clean: CleanPass, key: Key) -> Tensor:
    """One cached quantity ``[b, p, d]`` out of a full clean pass."""
    kind = key[0]
    if kind == "head":
        return clean.head_out[key[1]][:, :, key[2]]
    if kind == "mlp":
        return clean.mlp_out[key[1]]
    if kind == "embed":
        return clean.embed
    if kind == "pos":
        return clean.pos
    if kind == "resid_pre":
        return clean.resid_pre[key[1]]
    if kind == "resid_mid":
        return clean.resid_mid[key[1]]
    return clean.resid_final


def _stage(component: Component, n_layers: int) -> int:
    if isinstance(component, Output):
        return 2 * n_layers + 1
    return component.stage


_COMPUTED = {("embed",), ("pos",)}  # read from the weights directly, never cached


class _CleanCache:
    """Clean-pass quantities for the rows some schedules read, only the keys they need.

    Embeddings are not stored: they are read from the weights for the rows asked for. The
    tables are preallocated and filled sub-batch by sub-batch, so building the cache never holds
    more than the tables plus one sub-batch's clean pass.
    """

    def __init__(self, view: ModelView, tokens: Tensor, rows: Tensor, keys: set[Key], sub_batch: int) -> None:
        self.view, self.tokens = view, tokens
        self.rows = torch.unique(rows)  # [u] sorted dataset rows
        stored = sorted(keys - _COMPUTED)
        n_pos, d = tokens.shape[1], view.config.d_model
        self.values: dict[Key, Tensor] = {
            key: torch.empty(len(self.rows), n_pos, d, dtype=view.dtype, device=view.device) for key in stored
        }
        if not stored:
            return
        for start in range(0, len(self.rows), sub_batch):
            clean = view.clean_pass(tokens[self.rows[start : start + sub_batch]])
            for key in stored:
                self.values[key][start : start + sub_batch] = _read(clean, key)

    def index(self, rows: Tensor) -> Tensor:
        """Positions of dataset ``rows`` in the cache."""
        return torch.searchsorted(self.rows, rows.contiguous())

    def get(self, key: Key, rows: Tensor) -> Float[Tensor, "n p d"]:
        """``key`` on ``rows``: ``[n]`` rows give ``[n, p, d]``; ``[n, p]`` rows take position t from row[:, t]."""
        n_pos = self.tokens.shape[1]
        if key in _COMPUTED:
            if key == ("pos",):  # the same in every row; shortformer positions are not in the residual
                if self.view.config.positional == "standard":
                    return self.view.pos_embed(rows.shape[0], n_pos)
                return torch.zeros(rows.shape[0], n_pos, self.view.config.d_model, dtype=self.view.dtype, device=self.view.device)
            toks = self.tokens[rows] if rows.ndim == 1 else self.tokens[rows, torch.arange(n_pos, device=rows.device)]
            return self.view.embed(toks)  # [n, p, d]
        table = self.values[key]  # [u, p, d]
        idx = self.index(rows)
        if rows.ndim == 1:
            return table[idx]
        return table[idx, torch.arange(n_pos, device=idx.device)]  # [n, p, d]


class BatchedEngine:
    """Executes many schedules over one model and dataset, sharing one clean pass per chunk.

    Args:
        model: a TransformerLens ``HookedTransformer`` (read into a `ModelView`) or a ModelView.
        data: the dataset every schedule indexes into.
        memory_budget_mb: a rough bound on the engine's working memory: up to 60% holds the clean
            cache (built once for all chunks when it fits, else once per chunk), 30% the node
            values of one chunk of reference rows, 10% one sub-batch of the clean pass.
        device: where to compute (default: the model's device); dtype follows the model.
    """

    name = "batched"

    def __init__(self, model, data: Dataset, *, memory_budget_mb: float = 4096, device=None) -> None:
        view = model if isinstance(model, ModelView) else ModelView.from_hooked(model)
        if device is not None:
            view = view.to(device)
        self.view = view
        self.data = data
        self.tokens = data.tokens.to(view.device)
        self.memory_budget_mb = float(memory_budget_mb)
        self.n_layers = view.config.n_layers

    # ---- public -------------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, schedule: Schedule) -> Float[Tensor, "n pos vocab"]:
        """Logits of the scrubbed model for every reference row of ``schedule``."""
        return self.run_many([schedule])[0]

    @torch.no_grad()
    def run_many(self, schedules: Sequence[Schedule]) -> list[Float[Tensor, "n pos vocab"]]:
        """Logits for each schedule; all share one clean pass per chunk of reference rows."""
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
        keys, rows = _cache_needs(schedules)
        shared = None
        if self._cache_bytes(len(keys - _COMPUTED), len(torch.unique(rows))) <= self.memory_budget_mb * 2**20 * 0.6:
            shared = self._build_cache(keys, rows)  # one clean pass for every chunk
        size = self.chunk_size(schedules)
        outputs: list[list[Tensor]] = [[] for _ in schedules]
        for start in range(0, n, size):
            index = torch.arange(start, min(n, start + size), device=schedules[0].reference.device)
            chunk = [s.select(index) if size < n else s for s in schedules]
            cache = shared if shared is not None else self._build_cache(*_cache_needs(chunk))
            for i, logits in enumerate(self._run_chunk(chunk, cache)):
                outputs[i].append(logits)
        return [torch.cat(parts) for parts in outputs]

    @torch.no_grad()
    def clean_logits(self, rows: Int[Tensor, "n"]) -> Float[Tensor, "n pos vocab"]:
        """Logits of the unscrubbed model on ``rows``."""
        size = self._clean_sub_batch()
        rows = rows.to(self.view.device)
        return torch.cat([self.view.forward(self.tokens[rows[i : i + size]]) for i in range(0, len(rows), size)])

    def chunk_size(self, schedules: Sequence[Schedule]) -> int:
        """Reference rows per chunk so that one chunk's node values stay within the memory budget."""
        c = self.view.config
        nodes = sum(_count(s.root) for s in schedules)
        # per reference row: every node keeps a value, and a batched call holds ~4 inputs/outputs
        per_row = (nodes + 4 * max(1, nodes // 4)) * self.data.n_pos * c.d_model
        per_row += len(schedules) * self.data.n_pos * c.d_vocab_out  # the logits
        per_row *= self.view.dtype.itemsize
        return max(1, min(schedules[0].n_rows, int(self.memory_budget_mb * 2**20 * 0.3 // per_row)))

    def _cache_bytes(self, n_keys: int, n_rows: int) -> float:
        return float(n_keys) * n_rows * self.data.n_pos * self.view.config.d_model * self.view.dtype.itemsize

    def _clean_sub_batch(self) -> int:
        """Rows per clean forward pass: it holds every layer's activations (and the per-head
        attention intermediates) for its rows, within 10% of the budget."""
        c = self.view.config
        per_pos = (4 * c.n_layers + 2 * c.n_layers * c.n_heads + 4) * c.d_model + c.d_vocab_out
        per_pos += c.n_heads * (self.data.n_pos + 3 * c.d_head)  # attention scores and q, k, v
        per_row = per_pos * self.data.n_pos * self.view.dtype.itemsize
        return max(1, int(self.memory_budget_mb * 2**20 * 0.1 // per_row))

    def _build_cache(self, keys: set[Key], rows: Tensor) -> "_CleanCache":
        return _CleanCache(self.view, self.tokens, rows.to(self.view.device), keys, self._clean_sub_batch())

    # ---- one chunk ----------------------------------------------------------------------------

    def _run_chunk(self, schedules: Sequence[Schedule], cache: "_CleanCache") -> list[Tensor]:
        nodes = [node for s in schedules for node in _expanded(s.root)]
        device = self.view.device

        values: dict[int, Tensor] = {}
        # leaves first: read straight from the cache
        for node in nodes:
            if node.is_leaf:
                values[id(node)] = cache.get(_output_key(node.component), node.datum.to(device))
        # nodes with inputs, stage by stage; per-position wrappers right after their copies
        pending = [n for n in nodes if not n.is_leaf and n.copies is None]
        by_stage: dict[int, list[ScheduleNode]] = defaultdict(list)
        for node in pending:
            by_stage[_stage(node.component, self.n_layers)].append(node)
        wrappers = [n for n in nodes if n.copies is not None]
        for stage in sorted(by_stage):
            self._evaluate_stage(by_stage[stage], cache, values)
            for wrapper in wrappers:
                if _stage(wrapper.component, self.n_layers) == stage:
                    values[id(wrapper)] = _assemble_copies(wrapper, values)
        return [values[id(s.root)] for s in schedules]

    def _evaluate_stage(self, nodes: list[ScheduleNode], cache: _CleanCache, values: dict[int, Tensor]) -> None:
        """Evaluate nodes of one component kind and layer in one batched call."""
        groups: dict[tuple, list[ScheduleNode]] = defaultdict(list)
        for node in nodes:
            groups[type(node.component)].append(node)
        for kind, group in groups.items():
            inputs = [self._port_inputs(node, cache, values) for node in group]
            sizes = [node.other.shape[0] for node in group]
            if kind is Head:
                layer = group[0].component.layer
                head_index = torch.cat(
                    [torch.full((n,), node.component.head, dtype=torch.long) for n, node in zip(sizes, group)]
                ).to(self.view.device)
                q, k, v = (torch.cat([inp[p] for inp in inputs]) for p in ("q", "k", "v"))  # [sum n, p, d]
                out = self.view.heads(layer, head_index, q, k, v)  # [sum n, p, d]
            elif kind is MLP:
                x = torch.cat([inp["in"] for inp in inputs])
                out = self.view.mlp(group[0].component.layer, x)
            elif kind is Output:
                out = self.view.unembed(torch.cat([inp["in"] for inp in inputs]))  # [sum n, p, vocab]
            else:
                raise ScheduleError(f"{kind.__name__} has no ports; it can only be a leaf")
            for node, part in zip(group, torch.split(out, sizes)):
                values[id(node)] = part

    def _port_inputs(self, node: ScheduleNode, cache: _CleanCache, values: dict[int, Tensor]) -> dict[str, Tensor]:
        """``resid_p(other) - sum_k out_k(other) + sum_k scrubbed_k`` for every port of ``node``."""
        other = node.other.to(self.view.device)
        resid = cache.get(_port_key(node.component), other)  # [n, p, d]
        inputs = {port: resid for port in node.component.ports}
        for child in node.children:
            diff = values[id(child)] - cache.get(_output_key(child.component), other)  # [n, p, d]
            if child.edge.positions is not None:
                mask = torch.zeros(diff.shape[1], dtype=diff.dtype, device=diff.device)
                mask[list(child.edge.positions)] = 1.0
                diff = diff * mask[None, :, None]
            inputs[child.edge.port] = inputs[child.edge.port] + diff
        return inputs


def _cache_needs(schedules: Sequence[Schedule]) -> tuple[set[Key], Tensor]:
    """The clean-pass quantities the schedules read, and every dataset row they read them on."""
    keys: set[Key] = set()
    rows: list[Tensor] = []
    for s in schedules:
        for node in s.root.walk():
            if node.is_leaf:
                keys.add(_output_key(node.component))
                rows.append(node.datum.flatten())
            elif node.copies is None:
                keys.add(_port_key(node.component))
                keys.update(_output_key(child.component) for child in node.children)
                rows.append(node.other)
    return keys, torch.cat(rows)


def _expanded(node: ScheduleNode):
    """Every node, copies and wrappers included."""
    return list(node.walk())


def _count(node: ScheduleNode) -> int:
    return sum(1 for _ in node.walk())


def _assemble_copies(wrapper: ScheduleNode, values: dict[int, Tensor]) -> Tensor:
    """Position ``t`` of a per-position node comes from its copy for ``t``."""
    first = values[id(next(iter(wrapper.copies.values())))]
    out = torch.zeros_like(first)  # positions without a copy are never read by the parent
    for t, copy in wrapper.copies.items():
        out[:, t] = values[id(copy)][:, t]
    return out

