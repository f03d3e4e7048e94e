"""Path patching: a sender's effect through chosen receivers' ports only.

For each sender ``s`` and the receivers ``R`` (head ports, MLP inputs, or the logits):

1. ``delta = a_source(s) - a_base(s)``: the sender's output in the source run minus the base run
   (denoising: clean minus corrupted; noising: corrupted minus clean), every position;
2. each receiver recomputes its output with ``delta`` added to the port named (a head's ``q``,
   ``k`` or ``v`` input, an MLP's input), everything else it reads from the base run; the
   ``"logits"`` receiver gets ``delta`` added to the final residual stream;
3. the base run is continued with the receivers' outputs fixed at those values and every other
   component downstream of them recomputed (Wang et al. 2022).

The sender therefore acts only along the paths that enter the receivers' ports; its direct
contributions elsewhere, and everything else, stay as in the base run. Effects are normalised as
in activation patching (0 = corrupted run, 1 = clean run).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from scrub.components import MLP, Head
from scrub.data import Dataset
from scrub.errors import ComponentError, ScrubError
from scrub.patching.activation import Passes, over_rows, score, write_change
from scrub.patching.chunks import check_budget
from scrub.patching.forward import after_attention, resume
from scrub.patching.inputs import Inputs, prepare
from scrub.patching.result import PatchingResult, build_result
from scrub.patching.sites import Site, resolve_sites

__all__ = ["path_patch", "resolve_receivers", "Receiver"]

Receiver = Union[str, tuple]


def resolve_receivers(view, receivers: Any) -> list[tuple[Any, str]]:
    """``receivers=`` as ``[(Head, port) | (MLP, "in") | ("logits", "")]``, checked."""
    items = [receivers] if isinstance(receivers, (str, tuple)) else receivers
    try:
        items = list(items)
    except TypeError:
        raise ComponentError(f"receivers= must be a list of (Head, port), (MLP, 'in') or 'logits', got {receivers!r}") from None
    if not items:
        raise ComponentError("receivers= is empty; name at least one (Head(l, h), 'q'|'k'|'v'), (MLP(l), 'in') or 'logits'")
    cfg = view.config
    out = []
    for item in items:
        if item == "logits":
            out.append(("logits", ""))
            continue
        if not (isinstance(item, tuple) and len(item) == 2):
            raise ComponentError(f"receiver {item!r}: write (Head(l, h), 'q'|'k'|'v'), (MLP(l), 'in') or 'logits'")
        component, port = item
        if isinstance(component, Head):
            if port not in ("q", "k", "v"):
                raise ComponentError(f"receiver port {port!r} of {component} does not exist; a head reads through 'q', 'k' or 'v'")
            if component.layer >= cfg.n_layers or component.head >= cfg.n_heads:
                raise ComponentError(
                    f"receiver {component} does not exist: layers 0..{cfg.n_layers - 1}, heads 0..{cfg.n_heads - 1}"
                )
        elif isinstance(component, MLP):
            if port != "in":
                raise ComponentError(f"receiver port {port!r} of {component} does not exist; an MLP reads through 'in'")
            if cfg.attn_only or component.layer >= cfg.n_layers:
                raise ComponentError(f"receiver {component} does not exist in this model (attention-only, or no such layer)")
        else:
            raise ComponentError(f"receiver {item!r}: write (Head(l, h), 'q'|'k'|'v'), (MLP(l), 'in') or 'logits'")
        out.append((component, port))
    return list(dict.fromkeys(out))


def _upstream(sender: Site, receiver: Any, parallel: bool = False) -> bool:
    """Whether ``sender``'s output reaches ``receiver``'s ports directly (a parallel block's MLP
    reads the layer's input, not its heads)."""
    if receiver == "logits":
        return True
    if isinstance(receiver, Head):
        return sender.layer < receiver.layer
    same_layer_head = sender.kind == "head" and sender.layer == receiver.layer and not parallel
    return sender.layer < receiver.layer or same_layer_head


def _stream_delta(view, base, source, sender: Site) -> Tensor:
    """What patching ``sender`` alone changes in the residual stream ``[n, p, d]``: its output's
    change; for a head of a post-norm model, the change of the re-normalised attention write."""
    if sender.kind == "mlp":
        return source.mlp_out[sender.layer] - base.mlp_out[sender.layer]  # [n, p, d]
    layer, h = sender.layer, sender.head
    return write_change(view, base, layer, source.head_out[layer][:, :, h] - base.head_out[layer][:, :, h])  # [n, p, d]


def _label(receivers: Sequence[tuple[Any, str]]) -> str:
    return ", ".join("logits" if c == "logits" else f"{c}.{p}" for c, p in receivers)


def _run_chunk(inputs: Inputs, passes: Passes, senders: Sequence[Site], receivers, read: Tensor) -> Tensor:
    """Metric values ``[len(senders) * n]`` for a chunk of senders."""
    view, data = inputs.view, inputs.data
    base, src = passes.base, passes.source
    n, n_pos = len(data), data.n_pos
    rows = torch.arange(n, device=view.device).repeat(len(senders))  # [c*n]
    parallel = view.config.parallel_blocks
    deltas = [_stream_delta(view, base, src, s) for s in senders]  # each [n, p, d]
    positions = torch.arange(n_pos, device=view.device)

    def delta_into(receiver) -> Tensor:
        """The senders' deltas that reach ``receiver`` (zero for senders not upstream of it)."""
        parts = [d if _upstream(s, receiver, parallel) else torch.zeros_like(d) for s, d in zip(senders, deltas)]
        return torch.cat(parts)  # [c*n, p, d]

    heads_fixed: dict[int, dict[int, Tensor]] = defaultdict(dict)
    mlp_fixed: dict[int, Tensor] = {}
    final_delta = None
    ports_of: dict[Head, list[str]] = defaultdict(list)
    for component, port in receivers:
        if component == "logits":
            final_delta = delta_into("logits")
        elif isinstance(component, MLP):
            mlp_fixed[component.layer] = view.mlp(component.layer, after_attention(view, base, component.layer)[rows] + delta_into(component))
        else:
            ports_of[component].append(port)
    for head, ports in ports_of.items():
        layer, h = head.layer, head.head
        vectors = {}
        for port, store in (("q", base.head_q), ("k", base.head_k), ("v", base.head_v)):
            if port in ports:
                x = base.resid_pre[layer][rows] + delta_into(head)  # [c*n, p, d]
                vectors[port] = view.head_projection(layer, h, port, x, positions)  # [c*n, p, e]
            else:
                vectors[port] = store[layer][rows, :, h]
        heads_fixed[layer][h] = view.head_output(layer, h, vectors["q"], vectors["k"], vectors["v"])  # [c*n, p, d]
    layers = [c.layer for c, _ in receivers if c != "logits"]
    if not layers:
        start, stage, x = view.config.n_layers - 1, "post", base.resid_final[rows]
    else:
        start = min(layers)
        # a parallel block's MLP does not read its heads: such a layer is resumed from its input
        from_pre = parallel or any(isinstance(c, Head) and c.layer == start for c, _ in receivers)
        stage = "pre" if from_pre else "mid"
        x = (base.resid_pre[start] if from_pre else after_attention(view, base, start))[rows]
    logits = resume(view, base, rows, start, stage, x, 0, read, heads_fixed, mlp_fixed, final_delta)
    full = base.logits[rows]  # [c*n, p, v]
    full[:, read] = logits
    clean = passes.clean_logits[rows] if inputs.metric.needs_clean else None
    return score(inputs.metric, full, data.rows(rows.cpu()), clean)


def path_patch(
    model: Any,
    data: Dataset,
    senders: Any,
    receivers: Any,
    *,
    direction: str = "denoise",
    corrupt: Any = None,
    metric: Any = None,
    seeds: Any = (0,),
    batch_rows: int = 4096,
    memory_budget_mb: Optional[float] = None,
) -> PatchingResult:
    """The effect of each sender through the receivers' ports only (everything else as in the
    base run), as a `PatchingResult` with one cell per sender.

    Args:
        senders: a `Head` or `MLP`, a family (``"heads"``, ``"mlp"``) or a list; senders upstream
            of no receiver are left out of the sweep.
        receivers: ``(Head(l, h), "q"|"k"|"v")``, ``(MLP(l), "in")``, ``"logits"``, or a list:
            all of them receive the sender together.
        direction, corrupt, metric, seeds, batch_rows, memory_budget_mb: as in `activation_patch`.

    Raises:
        ComponentError: an unknown sender or receiver, a bad port, no sender upstream of any
            receiver; and the errors of `activation_patch`; all before any forward pass.
    """
    inputs = prepare(model, data, corrupt, metric, direction, seeds)
    view = inputs.view
    sites = resolve_sites(view, senders)
    bad = [s for s in sites if s.kind not in ("head", "mlp")]
    if bad:
        raise ComponentError(f"senders must be head or MLP outputs, got {[str(s) for s in bad[:3]]}; pass Head(l, h), MLP(l), 'heads' or 'mlp'")
    resolved = resolve_receivers(view, receivers)
    parallel = view.config.parallel_blocks
    sites = [s for s in sites if any(_upstream(s, c, parallel) for c, _ in resolved)]
    if not sites:
        same_layer = "" if parallel else " (or the same layer for a head into an MLP)"
        raise ComponentError(
            f"no sender is upstream of the receivers {_label(resolved)}; a sender must sit in an earlier "
            f"layer than a head it sends to{same_layer}"
        )
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ScrubError(f"batch_rows={batch_rows!r}: pass a positive int (rows per batched call)")
    budget = check_budget(memory_budget_mb)

    def run(part: Inputs, passes: Passes) -> Tensor:
        read = torch.tensor(part.read_positions(), device=view.device)
        n = len(part.data)
        per_call = max(1, batch_rows // n)
        values = torch.empty(len(sites), n, dtype=torch.float64)
        with torch.no_grad():
            for start in range(0, len(sites), per_call):
                chunk = sites[start : start + per_call]
                values[start : start + len(chunk)] = _run_chunk(part, passes, chunk, resolved, read).reshape(len(chunk), n).cpu()
        return values

    values, clean_metric, corrupt_metric = over_rows(inputs, budget, run)
    return build_result("path", inputs, sites, values, clean_metric, corrupt_metric, receiver=_label(resolved), receivers=tuple(resolved))
