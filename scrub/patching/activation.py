"""Activation patching on the model view: two stored passes, then every patch batched.

`activation_patch` runs the clean and the corrupted rows once each (`ModelView.clean_pass`), then
evaluates every cell of the sweep (a site, optionally at one position) by continuing the base run
from the patched point only (`scrub.patching.forward.resume`). Cells that start at the same point
share a batched call: their rows are stacked along the batch axis. Cells that change the stream
at one position of a causal model (a head's output, a query, the residual stream or an MLP's
output, by position) take `scrub.patching.forward.resume_at` instead: calls of about `TOKENS`
recomputed (row, position) tokens, cells of different positions packed together.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from scrub.data import Dataset
from scrub.errors import ScrubError
from scrub.metrics import Metric
from scrub.model import CleanPass, ModelView
from scrub.patching.chunks import check_budget, row_parts
from scrub.patching.forward import after_attention, after_layer, resume, resume_at
from scrub.patching.inputs import Inputs, prepare
from scrub.patching.result import PatchingResult, build_result
from scrub.patching.sites import Site, expand, resolve_positions, resolve_sites

__all__ = ["activation_patch", "Passes", "score", "patched_metrics", "over_rows", "write_change"]


class Passes:
    """The base run (the one patched) and the source run (where patched values come from)."""

    def __init__(self, inputs: Inputs) -> None:
        view = inputs.view
        with torch.no_grad():
            self.base: CleanPass = view.clean_pass(inputs.base_tokens.to(view.device))
            self.source: CleanPass = view.clean_pass(inputs.source_tokens.to(view.device))
        clean, corrupt = (self.source, self.base) if inputs.direction == "denoise" else (self.base, self.source)
        self.clean_logits = clean.logits  # [n, p, v]
        self.clean_metric = score(inputs.metric, clean.logits, inputs.data, clean.logits)  # [n]
        self.corrupt_metric = score(inputs.metric, corrupt.logits, inputs.data, clean.logits)  # [n]
        self.base_metric = self.corrupt_metric if inputs.direction == "denoise" else self.clean_metric


def over_rows(
    inputs: Inputs, budget_mb: float, run: Callable[[Inputs, Passes], Tensor], passes: int = 2
) -> tuple[Tensor, Tensor, Tensor]:
    """``run(part, Passes(part))`` (per cell and row, ``[cells, m]``) on slices of the rows that fit
    ``budget_mb`` (`scrub.patching.chunks.row_parts`; ``passes``: how many stored passes' worth of
    memory a row takes), joined: ``(values [cells, n], clean metric [n], corrupt metric [n])``."""
    values, clean, corrupt = [], [], []
    for part in row_parts(inputs, budget_mb, passes):
        stored = Passes(part)
        values.append(run(part, stored).cpu())
        clean.append(stored.clean_metric.cpu())
        corrupt.append(stored.corrupt_metric.cpu())
        del stored  # the next slice's passes take its place
    return torch.cat(values, 1), torch.cat(clean), torch.cat(corrupt)


def score(metric: Metric, logits: Tensor, batch: Dataset, clean_logits: Optional[Tensor]) -> Tensor:
    """The metric's per-row values (float64) on full-length ``logits``."""
    return metric(logits, batch, clean_logits if metric.needs_clean else None)


def columns(data: Dataset, read: Tensor) -> Dataset:
    """``data`` restricted to the positions ``read`` (tokens, targets, mask, per-position extras)."""
    idx = read.to(data.device)
    extras = {k: (v[:, idx] if v.ndim >= 2 and v.shape[1] == data.n_pos else v) for k, v in data.extras.items()}
    return Dataset(tokens=data.tokens[:, idx], targets=data.targets[:, idx], loss_mask=data.loss_mask[:, idx],
                   name=data.name, extras=extras)


def _score_at(inputs: Inputs, passes: Passes, rows: Tensor, read: Tensor, later: Tensor, logits: Tensor) -> Tensor:
    """The metric on the base run's logits at ``read`` with those at ``read[later]`` replaced by
    ``logits``. A metric that reads the scored positions only sees just those columns."""
    metric, data = inputs.metric, inputs.data
    if metric.reads == "scored":  # only the read columns: [b, r, v]
        full = passes.base.logits[rows[:, None], read[None, :]]  # [b, r, v]
        full[:, later] = logits
        batch = columns(data.rows(rows.cpu()), read)
        clean = passes.clean_logits[rows[:, None], read[None, :]] if metric.needs_clean else None
    else:
        full = passes.base.logits[rows]  # [b, p, v]
        full[:, read[later]] = logits
        batch = data.rows(rows.cpu())
        clean = passes.clean_logits[rows] if metric.needs_clean else None
    return score(metric, full, batch, clean)


def _mlp_at(view: ModelView, base: CleanPass, rows: Tensor, layer: int, x: Tensor, p0: int, p_end: int, at: Tensor) -> Tensor:
    """The stream after ``layer``'s MLP when the stream before it, ``x`` (positions
    ``p0..p_end``), differs from the base run only at position ``at[i]`` of row ``i``."""
    b = torch.arange(x.shape[0], device=view.device)
    mid = x[b, at - p0]  # [b, d]
    new_out = view.mlp(layer, mid[:, None])[:, 0]  # [b, d]
    out = after_layer(view, base, layer)[rows, p0 : p_end + 1].clone()  # [b, n, d]
    out[b, at - p0] = mid + new_out
    return out


def _start(view: ModelView, site: Site, p_end: int) -> tuple[int, str, int]:
    """Where a patch of ``site`` starts the recomputation: (layer, stage, first position)."""
    p0 = 0 if site.position is None or not view.config.causal else site.position
    if site.kind == "resid":
        return site.layer, "pre", p0
    if site.kind == "mlp" or view.config.parallel_blocks:  # parallel: the MLP does not read the heads
        return site.layer, "post", p0
    return site.layer, "mid", p0


def _mask(p: Optional[int], lo: int, hi: int, device) -> Tensor:
    """``[1, hi-lo, 1]``: True where position ``lo + i`` is patched (every one when ``p`` is None)."""
    span = torch.arange(lo, hi, device=device)
    hit = torch.ones_like(span, dtype=torch.bool) if p is None else span == p
    return hit[None, :, None]


def _after_heads(view: ModelView, base: CleanPass, layer: int) -> Tensor:
    """The stored stream where a head patch of ``layer`` starts (``[n, p, d]``): after its heads,
    or after the whole layer in parallel blocks (whose MLP does not read the heads)."""
    return after_layer(view, base, layer) if view.config.parallel_blocks else after_attention(view, base, layer)


def write_change(view: ModelView, base: CleanPass, layer: int, delta: Tensor, rows: Any = slice(None), sl: slice = slice(None)) -> Tensor:
    """How much the attention of ``layer`` adds to the stream changes (base rows ``rows``,
    positions ``sl``) when the sum of its head outputs changes by ``delta [b, n, d]``: ``delta``
    itself; with post-norms, where the attention writes ``N(sum_h o_h + b_O)``, the change of
    the re-normalised patched sum (never ``N`` of the change alone)."""
    if not view.config.post_norms:
        return delta
    total = base.head_out[layer][rows, sl].sum(2)  # [b, n, d]
    return view.attn_write(layer, total + delta) - base.attn_out[layer][rows, sl]  # [b, n, d]


def _heads_changed(view: ModelView, base: CleanPass, layer: int, rows: Tensor, sl: slice, delta: Tensor) -> Tensor:
    """The stream at a head patch's start (after the heads of ``layer``; after the whole layer
    for parallel blocks) when the sum of the layer's head outputs changes by ``delta [b, n, d]``."""
    return _after_heads(view, base, layer)[rows, sl] + write_change(view, base, layer, delta, rows, sl)  # [b, n, d]


def _patched_stream(view: ModelView, passes: Passes, site: Site, rows: Tensor, p0: int, p_end: int) -> Tensor:
    """The residual stream at the site's start point with the site patched ``[b, n, d]``."""
    base, src = passes.base, passes.source
    sl = slice(p0, p_end + 1)
    mask = _mask(site.position, p0, p_end + 1, view.device)  # [1, n, 1]
    layer, h = site.layer, site.head
    if site.kind == "resid":
        return torch.where(mask, src.resid_pre[layer][rows, sl], base.resid_pre[layer][rows, sl])
    if site.kind == "mlp":
        delta = src.mlp_out[layer][rows, sl] - base.mlp_out[layer][rows, sl]  # [b, n, d]
        return after_layer(view, base, layer)[rows, sl] + delta * mask
    # a head's output changed: the layer's head sum changes (after the heads; parallel blocks:
    # after the layer; post-norms: the patched sum re-normalised)
    if site.kind == "head":
        delta = src.head_out[layer][rows, sl, h] - base.head_out[layer][rows, sl, h]  # [b, n, d]
        return _heads_changed(view, base, layer, rows, sl, delta * mask)
    # q, k or v: the projected vector replaced, the head's output recomputed at p0..p_end
    ports = {}
    for port, b_store, s_store in (("q", base.head_q, src.head_q), ("k", base.head_k, src.head_k), ("v", base.head_v, src.head_v)):
        value = b_store[layer][rows, : p_end + 1, h]  # [b, p_end+1, e]
        if port == site.kind:
            full_mask = _mask(site.position, 0, p_end + 1, view.device)
            value = torch.where(full_mask, s_store[layer][rows, : p_end + 1, h], value)
        ports[port] = value
    q_pos = torch.arange(p0, p_end + 1, device=view.device)
    out = view.head_output(layer, h, ports["q"][:, p0:], ports["k"], ports["v"], q_pos)  # [b, n, d]
    delta = out - base.head_out[layer][rows, sl, h]  # [b, n, d]
    return _heads_changed(view, base, layer, rows, sl, delta)


#: Cells of one position whose patched stream differs from the base run at that position only, up
#: to the next layer: continued by `resume_at` (a causal model; off: every cell through `resume`).
ONE_POSITION = ("head", "q", "resid", "mlp")
FAST = True  # False: every cell through `resume` (tests/test_patching_fast.py compares the two)
TOKENS = 2048  # about how many (row, position) tokens one `resume_at` call recomputes


def _stream_at(view: ModelView, passes: Passes, sites: Sequence[Site], rows: Tensor) -> Tensor:
    """The patched residual stream at each site's position where `resume_at` takes it up: the
    input of the site's layer (residual stream), or of the next layer (head, query, MLP: the
    rest of the layer run at that position only). ``[len(sites) * len(rows), d]``; the sites
    share their layer and start (`_start`)."""
    layer, stage, _ = _start(view, sites[0], 0)
    if all(s.kind == "head" for s in sites) and not view.config.post_norms:  # `_patched_stream` at one position, for every site at once
        base, src = passes.base, passes.source
        at = torch.tensor([s.position for s in sites], device=view.device)  # [c]
        heads = torch.tensor([s.head for s in sites], device=view.device)  # [c]
        delta = src.head_out[layer][rows[:, None], at, heads] - base.head_out[layer][rows[:, None], at, heads]  # [n, c, d]
        x = (_after_heads(view, base, layer)[rows[:, None], at] + delta).transpose(0, 1).flatten(0, 1)  # [c*n, d]
    else:
        x = torch.cat([_patched_stream(view, passes, s, rows, s.position, s.position)[:, 0] for s in sites])  # [c*n, d]
    if stage != "mid" or view.config.attn_only:
        return x
    return x + view.mlp(layer, x)  # [c*n, d]


def _token_chunks(members: list[tuple[int, int]], n: int, p_end: int, batch_rows: int):
    """Cells per `resume_at` call: sorted by position, at most `TOKENS` recomputed tokens (and
    ``batch_rows`` rows) a call, at least one cell."""
    chunk: list[int] = []
    tokens = 0
    for position, i in members:
        cost = n * (p_end + 1 - position)
        if chunk and (tokens + cost > TOKENS or (len(chunk) + 1) * n > batch_rows):
            yield chunk
            chunk, tokens = [], 0
        chunk.append(i)
        tokens += cost
    if chunk:
        yield chunk


MIN_ROWS = 256  # a call with fewer rows than this takes in the cells of the next positions too


def _chunks(members: list[tuple[int, int]], n: int, batch_rows: int):
    """``(p0, cells)`` per batched call: cells sorted by first position; a call holds at most
    ``batch_rows`` rows, starts at its first cell's position, and takes in cells of later
    positions only while it holds fewer than `MIN_ROWS` rows (recomputing a few positions
    that did not change is cheaper than a small call)."""
    per_call = max(1, batch_rows // n)
    chunk: list[int] = []
    p0 = 0
    for start, i in members:
        full = len(chunk) >= per_call or (start != p0 and len(chunk) * n >= MIN_ROWS)
        if chunk and full:
            yield p0, chunk
            chunk = []
        if not chunk:
            p0 = start
        chunk.append(i)
    if chunk:
        yield p0, chunk


def patched_metrics(
    inputs: Inputs, passes: Passes, cells: Sequence[Site], batch_rows: int = 4096
) -> Tensor:
    """Per cell and row, the metric of the base run with that cell patched: ``[cells, n]``."""
    view, data = inputs.view, inputs.data
    n = len(data)
    read = torch.tensor(inputs.read_positions(), device=view.device)
    p_end = int(read.max()) if view.config.causal else data.n_pos - 1
    out = torch.empty(len(cells), n, dtype=torch.float64)
    groups: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    at_one: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)  # (layer, stage) -> (position, cell)
    for i, site in enumerate(cells):
        layer, stage, p0 = _start(view, site, p_end)
        if p0 > p_end:  # a causal model: nothing the metric reads can see this patch
            out[i] = passes.base_metric
            continue
        if FAST and view.config.causal and site.position is not None and site.kind in ONE_POSITION:
            at_one[(layer, stage)].append((site.position, i))
            continue
        single = stage == "mid" and site.kind in ("head", "q") and site.position is not None
        groups[(layer, stage, single and not view.config.attn_only)].append((p0, i))
    all_rows = torch.arange(n, device=view.device)
    with torch.no_grad():
        work: dict = {}  # buffers the calls share
        for (layer, stage), members in at_one.items():
            first = layer if stage == "pre" else layer + 1  # the first layer recomputed
            for chunk in _token_chunks(sorted(members), n, p_end, batch_rows):
                rows = all_rows.repeat(len(chunk))  # [c*n]
                at = torch.tensor([cells[i].position for i in chunk], device=view.device).repeat_interleave(n)  # [c*n]
                x_at = _stream_at(view, passes, [cells[i] for i in chunk], all_rows)  # [c*n, d]
                logits = resume_at(view, passes.base, rows, first, at, x_at, read, work=work)  # [c*n, r, v]
                values = _score_at(inputs, passes, rows, read, torch.ones_like(read, dtype=torch.bool), logits)
                out[chunk] = values.reshape(len(chunk), n).cpu()
        for (layer, stage, single), members in groups.items():
            for p0, chunk in _chunks(sorted(members), n, batch_rows):
                rows = all_rows.repeat(len(chunk))  # [c*n]
                x = torch.cat([_patched_stream(view, passes, cells[i], all_rows, p0, p_end) for i in chunk])
                if single:  # the head's output changed at one position: the MLP runs there only
                    at = torch.tensor([cells[i].position for i in chunk], device=view.device).repeat_interleave(n)
                    x, stage_now = _mlp_at(view, passes.base, rows, layer, x, p0, p_end, at), "post"
                else:
                    stage_now = stage
                later = read >= p0  # earlier positions cannot see the patch (causal)
                logits = resume(view, passes.base, rows, layer, stage_now, x, p0, read[later])  # [c*n, r', v]
                values = _score_at(inputs, passes, rows, read, later, logits)
                out[chunk] = values.reshape(len(chunk), n).cpu()
    return out


def activation_patch(
    model: Any,
    data: Dataset,
    components: Any = "heads",
    *,
    direction: str = "denoise",
    corrupt: Any = None,
    metric: Any = None,
    positions: Any = "all",
    seeds: Any = (0,),
    batch_rows: int = 4096,
    memory_budget_mb: Optional[float] = None,
) -> PatchingResult:
    """Patch each component's activation between a clean and a corrupted run, one cell at a time.

    Directions (``m`` is the metric's mean over rows):

    * ``"denoise"``: run the corrupted rows and put in the clean value of one activation. The
      effect ``(m_patched - m_corrupt) / (m_clean - m_corrupt)`` is 1 when that activation alone
      restores clean behaviour (it is *sufficient*), 0 when it restores nothing.
    * ``"noise"``: run the clean rows and put in the corrupted value of one activation. The same
      formula: 1 when the model does not notice (the activation is not *necessary*), 0 when it
      falls to the corrupted run's score. `PatchingResult.importance` is ``1 - effect`` here.

    Args:
        model: a TransformerLens ``HookedTransformer`` (read through `scrub.model.ModelView`) or a
            `ModelView`.
        data: the clean rows; its targets and scored positions are what the metric reads, on
            every run (patched runs are scored against the clean answers).
        components: ``"heads"`` (head outputs), ``"q"``, ``"k"``, ``"v"`` (head inputs), ``"mlp"``,
            ``"resid"`` (the residual stream each layer reads), a `Head` / `MLP` / ``(Head,
            port)``, or a list of these.
        direction: ``"denoise"`` or ``"noise"``.
        corrupt: ``None`` (``data.extras["corrupt_tokens"]``), paired rows (a `Dataset` or a
            token tensor), or a `scrub.Feature` to resample partners by (see
            `scrub.patching.inputs`).
        metric: a `scrub.metrics` name or `Metric`, or a callable ``(logits, batch) -> [n]``;
            default: logit difference where the dataset has ``extras["wrong_target"]``, else
            the right answer's logit.
        positions: ``"all"`` (every position at once), ``"each"`` or a list of positions (one
            cell per position).
        seeds: seeds of the resampling generator (a `Feature` ``corrupt`` only); rows of all
            seeds are pooled.
        batch_rows: about how many rows one batched call holds.
        memory_budget_mb: about how much memory the two stored passes may take (None: 4096);
            more rows than fit are swept in slices, each with its own passes, with the same
            numbers (`scrub.patching.chunks`).

    Returns:
        A `PatchingResult`; standard errors come from per-row linearisation of the ratio of means.

    Raises:
        ScrubError (ComponentError, DatasetError, FeatureError, MetricError): a bad argument,
            before any forward pass.
    """
    inputs = prepare(model, data, corrupt, metric, direction, seeds)
    sites = resolve_sites(inputs.view, components)
    cells = expand(sites, resolve_positions(positions, data.n_pos))
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ScrubError(f"batch_rows={batch_rows!r}: pass a positive int (rows per batched call)")
    budget = check_budget(memory_budget_mb)
    values, clean_metric, corrupt_metric = over_rows(inputs, budget, lambda part, passes: patched_metrics(part, passes, cells, batch_rows))
    return build_result("activation", inputs, cells, values, clean_metric, corrupt_metric)
