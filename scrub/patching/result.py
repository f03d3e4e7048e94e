"""`PatchingResult`: a sweep's normalised effects with standard errors, and their statistics.

Normalisation (both directions): ``effect = (m_patched - m_corrupt) / (m_clean - m_corrupt)``
with ``m`` the metric's mean over rows: 0 is the corrupted run, 1 the clean run.

Standard errors: the effect is a ratio of two means, ``R = mean(a) / mean(b)`` with
``a_i = m_patched,i - m_corrupt,i`` and ``b_i = m_clean,i - m_corrupt,i``. Linearising per row
(the delta method), ``z_i = (a_i - R b_i) / mean(b)`` has mean 0 and ``se(R) = sd(z) / sqrt(n)``.
Rows are treated as independent (rows repeated over several resampling seeds count once each).
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional, Sequence

import attrs
import torch
from torch import Tensor

from scrub.errors import ReportError
from scrub.patching.sites import Site

__all__ = ["PatchingResult", "build_result", "ratio_with_se", "agreement"]


def ratio_with_se(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``mean(a) / mean(b)`` along the last axis and its delta-method standard error.

    ``a`` is ``[..., n]``, ``b`` is ``[n]``. A zero ``mean(b)`` (clean and corrupted runs score the
    same) gives NaN: there is nothing to normalise by.
    """
    n = b.shape[-1]
    mean_b = b.mean()
    ratio = a.mean(-1) / mean_b  # [...]
    if n < 2:
        return ratio, torch.full_like(ratio, float("nan"))
    z = (a - ratio[..., None] * b) / mean_b  # [..., n]
    return ratio, z.std(-1, unbiased=True) / math.sqrt(n)


@attrs.frozen(eq=False)
class PatchingResult:
    """Per-cell normalised effects of a patching sweep.

    Attributes:
        method: ``"activation"``, ``"path"`` or ``"attribution"``.
        direction: ``"denoise"`` or ``"noise"``.
        metric: the metric's name.
        sites: the cells, in model order (`Site`: kind, layer, head, position).
        effect: ``[cells]`` normalised effect (0 = corrupted run, 1 = clean run).
        se: ``[cells]`` standard errors over rows (per-row linearisation of the ratio).
        patched: ``[cells]`` the metric's mean with the cell patched.
        clean, corrupt: the metric's mean on the clean and the corrupted run.
        n_rows: rows scored (over every seed).
        n_layers, n_heads, n_pos: the model's and the data's sizes (for the heatmaps).
        corrupted_by: how the corrupted rows were made.
        receiver: for path patching, the receiver(s) the senders were patched into (a label).
        receivers: for path patching, the receivers as ``(Head, port)``, ``(MLP, "in")`` or
            ``("logits", "")``.
        agreement: for attribution patching asked to compare, its agreement with exact
            activation patching (see `agreement`).
    """

    method: str
    direction: str
    metric: str
    sites: tuple[Site, ...]
    effect: Tensor
    se: Tensor
    patched: Tensor
    clean: float
    corrupt: float
    n_rows: int
    n_layers: int
    n_heads: int
    n_pos: int
    corrupted_by: str
    receiver: Optional[str] = None
    agreement: Optional[dict] = None
    receivers: tuple = ()

    @property
    def importance(self) -> Tensor:
        """How much each cell matters, larger = more: the effect when denoising (sufficiency),
        ``1 - effect`` when noising (necessity)."""
        return self.effect if self.direction == "denoise" else 1.0 - self.effect

    def ranked(self) -> list[tuple[Site, float, float]]:
        """``(site, effect, se)`` by decreasing importance (NaN last)."""
        imp = torch.nan_to_num(self.importance, nan=-math.inf)
        order = torch.argsort(imp, descending=True, stable=True).tolist()
        return [(self.sites[i], float(self.effect[i]), float(self.se[i])) for i in order]

    def top(self, k: int = 10) -> list[Site]:
        """The ``k`` most important cells."""
        return [site for site, _, _ in self.ranked()[:k]]

    def __getitem__(self, site: Site) -> float:
        """The effect of one cell."""
        for i, s in enumerate(self.sites):
            if s == site:
                return float(self.effect[i])
        raise ReportError(f"{site} is not a cell of this sweep; its cells are e.g. {[str(s) for s in self.sites[:5]]}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists and numbers) for JSON."""
        out = {
            "method": self.method,
            "direction": self.direction,
            "metric": self.metric,
            "clean": self.clean,
            "corrupt": self.corrupt,
            "n_rows": self.n_rows,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_pos": self.n_pos,
            "corrupted_by": self.corrupted_by,
            "receiver": self.receiver,
            "normalisation": "(m_patched - m_corrupt) / (m_clean - m_corrupt); 0 = corrupted run, 1 = clean run",
            "standard_error": "per-row linearisation (delta method) of the ratio of means",
            "cells": [
                {
                    "site": str(s),
                    "kind": s.kind,
                    "layer": s.layer,
                    "head": s.head,
                    "position": s.position,
                    "effect": _num(self.effect[i]),
                    "se": _num(self.se[i]),
                    "patched": _num(self.patched[i]),
                }
                for i, s in enumerate(self.sites)
            ],
        }
        if self.agreement is not None:
            out["agreement"] = self.agreement
        return out

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_html(self, title: Optional[str] = None) -> str:
        """A self-contained HTML page: the heatmaps (inline SVG) and the ranked table."""
        from scrub.patching.render import html

        return html(self, title)

    def __str__(self) -> str:
        from scrub.patching.render import table

        return table(self)

    def __repr__(self) -> str:
        return (
            f"PatchingResult({self.method}, {self.direction}, metric={self.metric}, "
            f"cells={len(self.sites)}, rows={self.n_rows})"
        )


def _num(value: Tensor) -> Optional[float]:
    v = float(value)
    return None if math.isnan(v) else v


def build_result(
    method: str,
    inputs,
    cells: Sequence[Site],
    values: Tensor,
    clean: Tensor,
    corrupt: Tensor,
    receiver: Optional[str] = None,
    agreement: Optional[dict] = None,
    receivers: tuple = (),
) -> PatchingResult:
    """A result from per-cell, per-row patched metric values ``[cells, n]``."""
    clean, corrupt = clean.double().cpu(), corrupt.double().cpu()
    effect, se = ratio_with_se(values.double() - corrupt, clean - corrupt)
    cfg = inputs.view.config
    return PatchingResult(
        method=method,
        direction=inputs.direction,
        metric=inputs.metric.name,
        sites=tuple(cells),
        effect=effect,
        se=se,
        patched=values.double().mean(-1),
        clean=float(clean.mean()),
        corrupt=float(corrupt.mean()),
        n_rows=int(values.shape[-1]),
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_pos=inputs.data.n_pos,
        corrupted_by=inputs.described,
        receiver=receiver,
        agreement=agreement,
        receivers=tuple(receivers),
    )


def _ranks(x: Tensor) -> Tensor:
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=x.dtype)
    return ranks


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else float("nan")


def agreement(estimate: PatchingResult, exact: PatchingResult, ks: Sequence[int] = (5, 10, 20)) -> dict:
    """How well ``estimate`` (e.g. attribution patching) matches ``exact`` on the same cells.

    Pearson and Spearman (rank) correlation of the effects; for each ``k``, the recall of the exact
    top-``k`` (by importance) in the estimate's top-``k`` and the cells it misses; the cells with the
    largest absolute disagreement.
    """
    if [str(s) for s in estimate.sites] != [str(s) for s in exact.sites]:
        raise ReportError("agreement needs two sweeps over the same cells in the same order")
    a, b = estimate.effect.double(), exact.effect.double()
    ok = ~(torch.isnan(a) | torch.isnan(b))
    a, b = a[ok], b[ok]
    sites = [s for s, keep in zip(exact.sites, ok.tolist()) if keep]
    imp_a = estimate.importance.double()[ok]
    imp_b = exact.importance.double()[ok]
    out: dict[str, Any] = {"pearson": _pearson(a, b), "spearman": _pearson(_ranks(a), _ranks(b)), "recall": {}}
    order_a = torch.argsort(imp_a, descending=True, stable=True).tolist()
    order_b = torch.argsort(imp_b, descending=True, stable=True).tolist()
    for k in ks:
        if k > len(sites):
            continue
        top_a, top_b = set(order_a[:k]), order_b[:k]
        missed = [str(sites[i]) for i in top_b if i not in top_a]
        out["recall"][str(k)] = {"recall": (k - len(missed)) / k, "missed": missed}
    gap = (a - b).abs()
    worst = torch.argsort(gap, descending=True, stable=True)[:5].tolist()
    out["largest_disagreements"] = [
        {"site": str(sites[i]), "estimate": float(a[i]), "exact": float(b[i])} for i in worst
    ]
    return out
