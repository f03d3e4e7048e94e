"""Finish a forward pass from the middle: what a patch changes, and nothing else.

A patch changes the residual stream from one point on (a layer's input, or the point between a
layer's attention and its MLP). `resume` recomputes the model from there, built only from the
`ModelView`'s public component functions (``head_projection``, ``head_output``, ``attn_bias``,
``mlp``, ``unembed``). Two facts keep it cheap:

* in a causal model a patch at position ``p`` changes nothing at positions ``< p``, so only
  positions ``p0..p_end`` are recomputed; keys and values before ``p0`` come from the base run's
  `CleanPass` (``head_k``, ``head_v``);
* nothing after the last position the metric reads matters (``p_end``), and in the last layer
  only the read positions' queries are needed.

Rows of one call may be different patches of different data rows (``rows`` says which row of
the base run each one continues): that is how many patches share one batched call.

`resume_at` is the same continuation for the commonest cells of a sweep, a patch that changes
the stream at ONE position up to the next layer (a head's output, a query, the residual stream
or an MLP's output at one position): each row is recomputed from its own position (rows of
different positions are packed into one token list, nothing between them recomputed), the
first layer gets new queries, keys and values at that position only, and the work runs in
buffers the calls of a sweep share. ``tests/test_patching_fast.py`` holds it equal to `resume`.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scrub.errors import ScheduleError
from scrub.model import CleanPass, ModelView, attention, packed

__all__ = ["resume", "resume_at", "after_attention", "after_layer", "head_block"]


def after_attention(view: ModelView, base: CleanPass, layer: int) -> Tensor:
    """The residual stream after the heads of ``layer`` (``[b, p, d]``), from the stored pass."""
    if base.resid_mid is not None:
        return base.resid_mid[layer]
    return after_layer(view, base, layer)


def after_layer(view: ModelView, base: CleanPass, layer: int) -> Tensor:
    """The residual stream after the whole of ``layer``: the next layer's input, or the final one."""
    if layer + 1 < view.config.n_layers:
        return base.resid_pre[layer + 1]
    return base.resid_final


def _fast(view: ModelView) -> bool:
    """Whether the all-heads path applies (every head in one matmul per port, the sum over heads
    in one matmul through ``W_O``): learned or shortformer positions, as many key/value heads as
    query heads. Elsewhere the per-head public functions are used."""
    cfg = view.config
    return cfg.positional in ("standard", "shortformer") and cfg.n_kv_heads == cfg.n_heads


def _all_heads(view: ModelView, base: CleanPass, rows: Tensor, layer: int, x: Tensor, p0: int, q_index: Optional[Tensor]) -> Tensor:
    """`head_block` for every head at once, summed over heads (plus ``b_O``)."""
    positions = torch.arange(p0, p0 + x.shape[1], device=view.device)  # [len]
    q_pos = positions if q_index is None else positions[q_index]  # [q]
    q, k, v = packed.ports(view, layer, x, positions, q_index)  # [b, H, q, e], [b, H, len, e] x 2 (see _fast)
    if p0 > 0:
        k = torch.cat([base.head_k[layer][rows, :p0].transpose(1, 2), k], dim=2)  # [b, H, p0+len, e]
        v = torch.cat([base.head_v[layer][rows, :p0].transpose(1, 2), v], dim=2)  # [b, H, p0+len, e]
    z = attention.mix(view.config, layer, q, k, v, q_pos)  # [b, H, q, e]
    out = z.transpose(1, 2).flatten(2) @ view.W_O[layer].flatten(0, 1)  # [b, q, d]
    return view.attn_write(layer, out)


def head_block(
    view: ModelView,
    base: CleanPass,
    rows: Tensor,
    layer: int,
    x: Float[Tensor, "b p d"],
    p0: int,
    q_index: Optional[Tensor] = None,
    fixed: Optional[Mapping[int, Tensor]] = None,
) -> Float[Tensor, "b q d"]:
    """Every head of ``layer`` (plus ``b_O``) on the residual stream ``x`` at positions
    ``p0..p0+len-1``; queries at ``q_index`` (offsets into ``x``; default: every one). Keys and
    values before ``p0`` come from ``base`` rows ``rows``. ``fixed[h]`` replaces head ``h``'s
    output (``[b, len, d]``, at the positions of ``x``)."""
    n_x = x.shape[1]
    if not fixed and _fast(view):
        return _all_heads(view, base, rows, layer, x, p0, q_index)
    positions = torch.arange(p0, p0 + n_x, device=view.device)  # [len]
    q_pos = positions if q_index is None else positions[q_index]  # [q]
    x_q = x if q_index is None else x[:, q_index]  # [b, q, d]
    total = None
    for h in range(view.config.n_heads):
        if fixed is not None and h in fixed:
            out = fixed[h] if q_index is None else fixed[h][:, q_index]  # [b, q, d]
        else:
            q = view.head_projection(layer, h, "q", x_q, q_pos)  # [b, q, e]
            k = view.head_projection(layer, h, "k", x, positions)  # [b, len, e]
            v = view.head_projection(layer, h, "v", x, positions)  # [b, len, e]
            if p0 > 0:
                k = torch.cat([base.head_k[layer][rows, :p0, h], k], dim=1)  # [b, p0+len, e]
                v = torch.cat([base.head_v[layer][rows, :p0, h], v], dim=1)  # [b, p0+len, e]
            out = view.head_output(layer, h, q, k, v, q_pos)  # [b, q, d]
        total = out if total is None else total + out
    return view.attn_write(layer, total)  # [b, q, d]


def resume(
    view: ModelView,
    base: CleanPass,
    rows: Int[Tensor, "b"],
    layer: int,
    stage: str,
    x: Float[Tensor, "b n d"],
    p0: int,
    read: Int[Tensor, "r"],
    heads_fixed: Optional[Mapping[int, Mapping[int, Tensor]]] = None,
    mlp_fixed: Optional[Mapping[int, Tensor]] = None,
    final_delta: Optional[Tensor] = None,
) -> Float[Tensor, "b r v"]:
    """Logits at the absolute positions ``read`` after continuing the residual stream ``x``.

    Args:
        view: the model.
        base: the stored pass the patched rows continue (keys/values before ``p0``).
        rows: for each row of ``x``, its row in ``base``.
        layer, stage: where ``x`` sits: ``"pre"`` (the input of ``layer``), ``"mid"`` (after the
            heads of ``layer``, before its MLP; with parallel blocks the MLP's input, which is
            the layer's input, and the layer's attention is the base run's) or ``"post"``
            (after ``layer``; ``layer`` may be ``n_layers - 1``, then ``x`` is the final stream).
        x: the residual stream at positions ``p0..p0+n-1``; it must reach ``max(read)``.
        p0: the first position held in ``x`` (0 for a non-causal model).
        read: absolute positions whose logits are returned.
        heads_fixed, mlp_fixed: outputs that stay fixed (path patching's receivers), per layer
            (and head), at the positions of ``x``.
        final_delta: added to the final stream (at the positions of ``x``) before unembedding.
    """
    n_layers = view.config.n_layers
    heads_fixed = heads_fixed or {}
    mlp_fixed = mlp_fixed or {}
    index = read.to(view.device) - p0  # [r] offsets into x
    start = layer + 1 if stage == "post" else layer
    if final_delta is not None:
        final_delta = final_delta[:, index]  # [b, r, d]
    if start >= n_layers:  # nothing left but the unembedding
        x = x[:, index]
    parallel = view.config.parallel_blocks
    for current in range(start, n_layers):
        last = current == n_layers - 1
        x_in = x[:, index] if last else x  # [b, q, d]
        if not (current == layer and stage == "mid"):
            q_index = index if last else None
            attn = head_block(view, base, rows, current, x, p0, q_index, heads_fixed.get(current))  # [b, q, d]
        elif parallel:  # x is the layer's input; its attention is the base run's
            attn = base.attn_out[current][rows, p0 : p0 + x.shape[1]]  # [b, n, d]
            attn = attn[:, index] if last else attn  # [b, q, d]
        else:  # x already holds this layer's attention
            attn = None
        if view.config.attn_only:
            x = x_in if attn is None else x_in + attn  # [b, q, d]
            continue
        mid = x_in if attn is None or parallel else x_in + attn  # the MLP's input [b, q, d]
        if current in mlp_fixed:
            fixed = mlp_fixed[current]
            out = fixed[:, index] if last else fixed  # [b, q, d]
        else:
            out = view.mlp(current, mid)  # [b, q, d]
        # parallel: (attention + MLP) + the layer's input, the order the model adds in
        x = (attn + out) + x_in if parallel else mid + out  # [b, q, d]
    if final_delta is not None:
        x = x + final_delta
    return view.unembed(x)  # [b, r, v]


def _tokens(at: Tensor, p_end: int) -> tuple[Tensor, Tensor, Tensor, int]:
    """The packed tokens of rows that are recomputed from position ``at[i]`` to ``p_end``:
    ``(row, pos, first, p0)``: each token's row and absolute position (row-major, positions
    ascending), the index of each row's first token, and the smallest ``at``."""
    p0 = int(at.min())
    offsets = torch.arange(p0, p_end + 1, device=at.device)  # [L]
    row, off = (offsets[None, :] >= at[:, None]).nonzero(as_tuple=True)  # [T], [T]
    lengths = p_end + 1 - at  # [b]
    first = torch.cumsum(lengths, 0) - lengths  # [b]
    return row, off + p0, first, p0


def _gather_index(new: Tensor, rows: Tensor, n_new: int, n_heads: int) -> Tensor:
    """Where each (row, head, position) of the attention inputs ``[b, H, P]`` comes from in a
    source of ``n_new`` new tokens' rows followed by the base run's (row ``(i * P + p) * H + h``
    for base row ``i``, position ``p``, head ``h``): ``new [b, P]`` is the index
    of the new token at that row and position (``-1``: the base run's, of base row ``rows[i]``).
    ``[b, H, P]``."""
    b, n_keys = new.shape
    keys = torch.arange(n_keys, device=new.device)  # [P]
    token = torch.where(new >= 0, new, n_new + rows[:, None] * n_keys + keys)  # [b, P] token rows of the source
    heads = torch.arange(n_heads, device=new.device)  # [H]
    return token[:, None, :] * n_heads + heads[None, :, None]  # [b, H, P]


def resume_at(
    view: ModelView,
    base: CleanPass,
    rows: Int[Tensor, "b"],
    layer: int,
    at: Int[Tensor, "b"],
    x_at: Float[Tensor, "b d"],
    read: Int[Tensor, "r"],
    work: Optional[dict] = None,
) -> Float[Tensor, "b r v"]:
    """Logits at the absolute positions ``read`` (ascending) when the residual stream entering
    ``layer`` (``n_layers``: the final stream) differs from row ``rows[i]`` of ``base`` at one
    position only, ``at[i]``, where it holds ``x_at[i]``. Causal models only.

    The arithmetic of `resume`, on less of it: only the positions ``at[i]..max(read)`` of row
    ``i`` are recomputed, packed into one token list (rows with different ``at`` share a call
    without recomputing the positions between them); in ``layer`` only position ``at[i]`` gets
    new queries, keys and values (the others are the base run's); in the last layer only the
    read positions' outputs. Each layer's queries, keys and values are gathered from the new
    tokens' (`packed.qkv`) and the base run's into ``[b, H, P, e]`` each, every row
    padded to positions ``0..max(read)`` with the base run's (gathers of rows, not scatters: a
    scatter of short rows is several times slower on CPU). Logits at read positions before
    ``at[i]`` are the base run's. ``work``: buffers reused across calls (a dict, kept by the
    caller between calls)."""
    c = view.config
    if not c.causal:
        raise ScheduleError("resume_at continues a causal model only (a patch at one position reaches every position of a bidirectional one); use resume")
    dev = view.device
    read = read.to(dev)
    n_base, n_pos = base.resid_final.shape[:2]
    p_end = int(read.max())
    n_keys, H, e = p_end + 1, c.n_heads, c.d_head
    work = {} if work is None else work
    b, r = rows.shape[0], read.shape[0]
    row, pos, first, p0 = _tokens(at, p_end)  # [T] each
    n_tok = row.shape[0]
    slot = torch.full((n_pos,), -1, dtype=torch.long, device=dev)  # position -> read index
    slot[read] = torch.arange(r, device=dev)
    at_read = (slot[pos] >= 0).nonzero().flatten()  # [Tr] the tokens whose logits are read
    q_read = read[read >= p0]  # [Lr] the last layer's query positions
    stream = base.resid_pre[layer] if layer < c.n_layers else base.resid_final  # [n, n_pos, d]
    x = stream.flatten(0, 1).index_select(0, rows[row] * n_pos + pos)  # [T, d]
    x.index_copy_(0, first, x_at)
    # where each layer's attention inputs come from: the first layer's new tokens are each row's
    # first (patched) one, the later layers' every packed token
    new_first = torch.full((b, n_keys), -1, dtype=torch.long, device=dev)  # [b, P]
    new_first[torch.arange(b, device=dev), at] = torch.arange(b, device=dev)
    new_all = torch.full((b, n_keys), -1, dtype=torch.long, device=dev)  # [b, P]
    new_all[row, pos] = torch.arange(n_tok, device=dev)
    keys_first, keys_all = _gather_index(new_first, rows, b, H), _gather_index(new_all, rows, n_tok, H)  # [b, H, P]
    # queries: the recomputed positions' (the last layer: the read ones')
    q_at = torch.arange(p0, n_keys, device=dev)  # [L]
    queries_first, queries_all = keys_first[:, :, p0:].flatten(), keys_all[:, :, p0:].flatten()  # [b*H*L]
    keys_first, keys_all = keys_first.flatten(), keys_all.flatten()  # [b*H*P]
    queries_last = {False: keys_all.view(b, H, n_keys)[:, :, q_read].flatten(), True: keys_first.view(b, H, n_keys)[:, :, q_read].flatten()}  # [b*H*Lr]
    # which heads' outputs are kept: every packed token's; in the last layer the read tokens'
    head_ids = torch.arange(H, device=dev)  # [H]
    z_mid = ((row[:, None] * H + head_ids) * (n_keys - p0) + (pos - p0)[:, None]).flatten()  # [T*H] into [b, H, L, e]
    z_last = ((row[at_read, None] * H + head_ids) * len(q_read) + torch.searchsorted(q_read, pos[at_read])[:, None]).flatten()  # [Tr*H] into [b, H, Lr, e]
    scratch = attention.scratch
    for current in range(layer, c.n_layers):
        last = current == c.n_layers - 1
        new_tokens = first if current == layer else None  # None: every packed token is new
        x_new = x if new_tokens is None else x.index_select(0, new_tokens)  # [t, d]
        pos_new = pos if new_tokens is None else at  # [t]
        t = x_new.shape[0]
        weights = work.get(("qkv", current))
        if weights is None:
            weights = work[("qkv", current)] = packed.qkv_weights(view, current)
        source = scratch(work, "source", ((t + n_base * n_keys) * H, 3 * e), x)  # new tokens' rows, then the base run's
        packed.qkv(view, current, x_new, pos_new, source[: t * H].view(t, H, 3, e), weights)
        stored = source[t * H :].view(n_base, n_keys, H, 3, e)
        for i, port in enumerate((base.head_q, base.head_k, base.head_v)):
            stored[:, :, :, i].copy_(port[current][:, :n_keys])  # [n, P, H, e]
        first_layer = new_tokens is not None
        if last:  # queries at the read positions only
            q_pos, q_index, out_idx = q_read, queries_last[first_layer], z_last
        else:
            q_pos, q_index, out_idx = q_at, queries_first if first_layer else queries_all, z_mid
        k_index = keys_first if first_layer else keys_all
        # each port gathered into its own contiguous [b, H, n, e] (the batched matmuls want one
        # stride between heads)
        q, k, v = (
            torch.index_select(source[:, i * e : (i + 1) * e], 0, index, out=scratch(work, name, (index.shape[0], e), x)).view(b, H, -1, e)
            for i, (name, index) in enumerate((("q", q_index), ("k", k_index), ("v", k_index)))
        )  # [b, H, Lq, e], [b, H, P, e], [b, H, P, e]
        z = attention.mix_small(c, current, q, k, v, q_pos, work)  # [b, H, Lq, e]
        z = torch.index_select(z.reshape(-1, e), 0, out_idx, out=scratch(work, "zt", (len(out_idx), e), z)).view(-1, H * e)  # [t, H*e]
        heads = torch.addmm(view.b_O[current], z, view.W_O[current].flatten(0, 1), out=scratch(work, "heads", (z.shape[0], c.d_model), z))  # [t, d]
        attn = view.attn_write(current, heads, with_bias=False)  # [t, d]
        x_in = x if not last else x.index_select(0, at_read)  # [t, d]
        if c.attn_only:
            x = x_in + attn
            continue
        t = x_in.shape[0]
        hidden, out = scratch(work, "hidden", (t, c.d_mlp), x), scratch(work, "mlp", (t, c.d_model), x)
        if c.parallel_blocks:  # attention and MLP both read the layer's input
            x = (attn + packed.mlp_into(view, current, x_in, hidden, out)) + x_in
        else:
            mid = torch.add(x_in, attn, out=scratch(work, "mid", x_in.shape, x))  # [t, d]
            x = mid + packed.mlp_into(view, current, mid, hidden, out)  # [t, d]
    final = x if layer < c.n_layers else x.index_select(0, at_read)  # [Tr, d] the read tokens
    logits = base.logits.index_select(1, read).index_select(0, rows)  # [b, r, v]
    logits.flatten(0, 1).index_copy_(0, row[at_read] * r + slot[pos[at_read]], view.unembed(final))
    return logits
