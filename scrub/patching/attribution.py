"""Attribution patching: every cell of a sweep to first order, from one forward and one backward.

For a cell with activation ``a`` (a head's output or q/k/v vector, an MLP's output, the residual
stream; at one position or all), the change in the metric when the source value is patched into
the base run is estimated per row as

    (a_source - a_base) . d metric / d a   (the gradient taken in the base run)

(Nanda 2023; Syed et al. 2023). The base run is the corrupted one when denoising and the clean one
when noising, as in `activation_patch`, and the estimate is normalised the same way. It costs a
forward of each run and one backward of the base run, whatever the number of cells.

It is good for small patches near the output and for attention routing; it is poor for large
patches (a whole residual stream), for saturated attention (a pattern weight moving from about 0
to about 1) and where a direct and an indirect effect cancel. ``compare=True`` runs exact
activation patching on the same sweep and attaches the agreement (`scrub.patching.agreement`).
AtP*'s fixes (recomputing the softmax for q/k patches, GradDrop) are not implemented.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
import torch
from torch import Tensor

from scrub.data import Dataset
from scrub.errors import MetricError, ScrubError
from scrub.model import ModelView
from scrub.patching.activation import Passes, activation_patch, over_rows
from scrub.patching.chunks import check_budget
from scrub.patching.inputs import Inputs, prepare
from scrub.patching.result import PatchingResult, agreement, build_result
from scrub.patching.sites import Site, expand, resolve_positions, resolve_sites

__all__ = ["attribution_patch", "gradients"]

NOT_DIFFERENTIABLE = ("accuracy",)


def gradients(inputs: Inputs, kinds: set[str]) -> dict[tuple[str, int], Tensor]:
    """d(sum of the per-row metric)/d(activation) in the base run, per (kind, layer):
    heads' outputs and q/k/v ``[n, p, H, .]``, MLP outputs and resid_pre ``[n, p, d]``."""
    view: ModelView = inputs.view
    cfg = view.config
    tokens = inputs.base_tokens.to(view.device)
    n, n_pos = tokens.shape
    positions = torch.arange(n_pos, device=view.device)
    taps: dict[tuple[str, int], Tensor] = {}

    def tap(kind: str, layer: int, like: Tensor) -> Tensor:
        if kind not in kinds:
            return like
        t = torch.zeros_like(like, requires_grad=True)
        taps[(kind, layer)] = t
        return like + t

    resid = view.embed(tokens) + (view.pos_embed(n, n_pos) if cfg.positional == "standard" else 0)  # [n, p, d]
    for layer in range(cfg.n_layers):
        resid = tap("resid", layer, resid)
        proj = {}
        for port in ("q", "k", "v"):
            stacked = torch.stack([view.head_projection(layer, h, port, resid, positions) for h in range(cfg.n_heads)], 2)
            proj[port] = tap(port, layer, stacked)  # [n, p, H, e]
        heads = torch.stack(
            [view.head_output(layer, h, proj["q"][:, :, h], proj["k"][:, :, h], proj["v"][:, :, h]) for h in range(cfg.n_heads)], 2
        )  # [n, p, H, d]
        heads = tap("head", layer, heads)
        written = view.attn_write(layer, heads.sum(2))  # [n, p, d] (post-norms: N(sum + b_O))
        if cfg.attn_only:
            resid = resid + written
            continue
        mlp_in = resid if cfg.parallel_blocks else resid + written  # [n, p, d]
        mlp_out = tap("mlp", layer, view.mlp(layer, mlp_in))  # [n, p, d]
        resid = (written + mlp_out) + mlp_in if cfg.parallel_blocks else mlp_in + mlp_out  # [n, p, d]
    logits = view.unembed(resid)  # [n, p, v]
    clean = None
    if inputs.metric.needs_clean:
        with torch.no_grad():
            clean = view.forward(inputs.data.tokens.to(view.device))
    value = inputs.metric.fn(logits, inputs.data, clean)
    if not isinstance(value, Tensor) or not value.requires_grad:
        raise MetricError(
            f"metric {inputs.metric.name!r} is not differentiable in the logits (its value has no gradient); "
            f"attribution patching needs one: use logit_diff, target_logit, cross_entropy or kl_to_model"
        )
    grads = torch.autograd.grad(value.sum(), list(taps.values()))
    return {key: g.detach() for key, g in zip(taps, grads)}


def _activation(passes: Passes, which: str, kind: str, layer: int) -> Tensor:
    run = passes.base if which == "base" else passes.source
    return {
        "head": run.head_out, "q": run.head_q, "k": run.head_k, "v": run.head_v,
        "mlp": run.mlp_out, "resid": run.resid_pre,
    }[kind][layer]


def _head_change(view: ModelView, passes: Passes, site: Site) -> Tensor:
    """The exact change of the head's output when its q or k vector takes the source value
    (at ``site.position``, or everywhere): ``[n, p, d]``."""
    base, src = passes.base, passes.source
    layer, h = site.layer, site.head
    vectors = {}
    for port, b_store, s_store in (("q", base.head_q, src.head_q), ("k", base.head_k, src.head_k), ("v", base.head_v, src.head_v)):
        value = b_store[layer][:, :, h]  # [n, p, e]
        if port == site.kind:
            patched = s_store[layer][:, :, h]
            if site.position is None:
                value = patched
            else:
                value = value.clone()
                value[:, site.position] = patched[:, site.position]
        vectors[port] = value
    with torch.no_grad():
        out = view.head_output(layer, h, vectors["q"], vectors["k"], vectors["v"])  # [n, p, d]
    return out - base.head_out[layer][:, :, h]


def attribution_patch(
    model: Any,
    data: Dataset,
    components: Any = "heads",
    *,
    direction: str = "denoise",
    corrupt: Any = None,
    metric: Any = None,
    positions: Any = "all",
    seeds: Any = (0,),
    compare: bool = False,
    qk_fix: bool = False,
    memory_budget_mb: Optional[float] = None,
) -> PatchingResult:
    """First-order estimates of `activation_patch`'s effects for the same sweep.

    Arguments as in `activation_patch` (``memory_budget_mb`` counts the gradient pass as two
    more stored passes). With ``qk_fix=True`` (AtP*'s query/key fix) a cell on a
    head's ``q`` or ``k`` recomputes that head's attention exactly with the patched vector, and
    only the head's output change is linearised: ``(out_patched - out_base) . d metric / d out``,
    which removes the softmax saturation error. With ``compare=True`` exact activation patching
    runs on the same cells and `PatchingResult.agreement` holds the Pearson and rank correlation, the recall of
    the exact top-k (k = 5, 10, 20) with the cells missed, and the largest disagreements.

    Raises:
        MetricError: a metric that is not differentiable (``accuracy``; a custom one is checked
            after the forward pass); and the errors of `activation_patch`.
    """
    for flag, value in (("compare", compare), ("qk_fix", qk_fix)):
        if not isinstance(value, bool):
            raise ScrubError(f"{flag}={value!r}: pass True or False")
    inputs = prepare(model, data, corrupt, metric, direction, seeds)
    if inputs.metric.name in NOT_DIFFERENTIABLE:
        raise MetricError(
            f"metric {inputs.metric.name!r} is piecewise constant in the logits, so its gradient is zero; "
            f"attribution patching needs a differentiable metric (logit_diff, target_logit, cross_entropy)"
        )
    sites = resolve_sites(inputs.view, components)
    cells = expand(sites, resolve_positions(positions, data.n_pos))
    budget = check_budget(memory_budget_mb)
    kinds = {s.kind for s in cells} | ({"head"} if qk_fix else set())

    def run(part: Inputs, passes: Passes) -> Tensor:
        grads = gradients(part, kinds)
        estimates = torch.empty(len(cells), len(part.data), dtype=torch.float64)
        for i, site in enumerate(cells):
            if qk_fix and site.kind in ("q", "k"):
                diff = _head_change(part.view, passes, site)  # [n, p, d]
                product = diff * grads[("head", site.layer)][:, :, site.head]
                estimates[i] = product.reshape(product.shape[0], -1).sum(-1).double().cpu()
                continue
            diff = _activation(passes, "source", site.kind, site.layer) - _activation(passes, "base", site.kind, site.layer)
            product = diff * grads[(site.kind, site.layer)]  # [n, p, (H,) .]
            if site.head is not None:
                product = product[:, :, site.head]
            if site.position is not None:
                product = product[:, site.position]
            estimates[i] = product.reshape(product.shape[0], -1).sum(-1).double().cpu()
        return passes.base_metric.cpu()[None, :] + estimates  # [cells, n] estimated patched metric

    values, clean_metric, corrupt_metric = over_rows(inputs, budget, run, passes=4)
    result = build_result("attribution", inputs, cells, values, clean_metric, corrupt_metric)
    if compare:
        exact = activation_patch(
            inputs.view, data, components,
            direction=direction, corrupt=corrupt, metric=metric, positions=positions, seeds=seeds,
            memory_budget_mb=budget,
        )
        result = attrs.evolve(result, agreement=agreement(result, exact))
    return result
