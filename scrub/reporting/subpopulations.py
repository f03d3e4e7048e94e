"""Where a hypothesis fails: loss recovered per subpopulation, per row, on the worst rows, and how
much of the model-vs-scrubbed difference cancels across rows.

Definitions (``b_i``, ``s_i``: row ``i``'s baseline and scrubbed metric averaged over seeds,
``m_i`` the model's; ``w_i`` the metric's row weights, 1 by default; means are ``w``-weighted):

* **per-row recovered loss** ``r_i = (b_i - s_i) / G`` with ``G = mean_j (b_j - m_j)``, the gap
  between baseline and model over the whole dataset. Its (weighted) mean is exactly the loss
  recovered; a row scores 1 when scrubbing moves it from the baseline by as much as the model
  moves an average row, 0 when the scrubbed model does no better there than the baseline. (A
  per-row ratio ``(b_i - s_i) / (b_i - m_i)`` would divide by near-zero gaps on easy rows.)
* **loss recovered of a subpopulation** ``S``: the ratio of the means over ``S`` only,
  ``mean_S (b - s) / mean_S (b - m)``, with the usual SE and bootstrap CI (`scrub.metrics`).
* **worst rows**: the ``worst_fraction`` of rows with the lowest ``r_i``, and their loss recovered.
* **cancellation**: with ``d_i = s_i - m_i`` (scrubbed minus model), ``mean |d_i|`` against
  ``|mean d_i|``, both as a fraction of ``G``. When the first is much larger than the second,
  errors of opposite sign cancel in the average: the loss recovered looks better than the
  hypothesis is row by row. Flagged when ``mean|d| > 2 |mean d|`` and ``mean|d| > 0.1 G``.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import attrs
import torch
from torch import Tensor

from scrub.data import Dataset, Feature
from scrub.errors import FeatureError, ReportError
from scrub.metrics import Estimate, loss_recovered
from scrub.result import Result

__all__ = ["Subpopulations", "GroupLR", "Cancellation", "subpopulations", "per_row", "group_lr", "row_values", "check_by",
           "CANCEL_RATIO", "CANCEL_SHARE"]

CANCEL_RATIO = 2.0  # flag when mean|d| > CANCEL_RATIO * |mean d| ...
CANCEL_SHARE = 0.1  # ... and mean|d| > CANCEL_SHARE * G


def _est(e: Estimate) -> dict:
    return {"value": _num(e.value), "stderr": _num(e.stderr), "ci": [_num(x) for x in e.ci]}


def _num(x) -> Optional[float]:
    return None if x is None or not math.isfinite(float(x)) else float(x)


@attrs.frozen
class GroupLR:
    """Loss recovered on one subpopulation."""

    label: str
    n_rows: int
    lr: Estimate

    def to_dict(self) -> dict:
        return {"label": self.label, "n_rows": self.n_rows, "loss_recovered": _est(self.lr)}


@attrs.frozen
class Cancellation:
    """Mean absolute per-row difference against the absolute mean difference (fractions of the gap G)."""

    mean_abs: float
    abs_mean: float
    flagged: bool

    def to_dict(self) -> dict:
        return {"mean_abs_difference": _num(self.mean_abs), "abs_mean_difference": _num(self.abs_mean),
                "flagged": self.flagged}


@attrs.frozen(eq=False)
class Subpopulations:
    """Per-feature-value LR, the per-row distribution, the worst rows and the cancellation check."""

    by: dict  # feature name -> tuple[GroupLR, ...]
    histogram: tuple[tuple[float, ...], tuple[int, ...]]  # bin edges, counts of per-row recovered loss
    worst: GroupLR
    worst_fraction: float
    cancellation: Cancellation

    def findings(self) -> list[str]:
        out = []
        c = self.cancellation
        if c.flagged:
            out.append(
                f"cancellation: per-row differences between the scrubbed and the model average {c.mean_abs:.1%} of the "
                f"baseline gap in size but only {c.abs_mean:.1%} net; errors of opposite sign cancel, so loss recovered "
                f"overstates how well the hypothesis holds row by row"
            )
        for name, groups in self.by.items():
            worst = min(groups, key=lambda g: g.lr.value if math.isfinite(g.lr.value) else math.inf)
            best = max(groups, key=lambda g: g.lr.value if math.isfinite(g.lr.value) else -math.inf)
            if math.isfinite(worst.lr.value) and best.lr.value - worst.lr.value > 0.2 and worst.lr.ci[1] < best.lr.ci[0]:
                out.append(f"subpopulations: by {name}, loss recovered ranges from {worst.lr.value:.1%} ({name}={worst.label}, "
                           f"{worst.n_rows} rows) to {best.lr.value:.1%} ({name}={best.label}); the CIs do not overlap")
        return out

    def to_dict(self) -> dict[str, Any]:
        edges, counts = self.histogram
        return {
            "by": {name: [g.to_dict() for g in groups] for name, groups in self.by.items()},
            "per_row_histogram": {"edges": [_num(x) for x in edges], "counts": list(counts)},
            "worst": {"fraction": self.worst_fraction, **self.worst.to_dict()},
            "cancellation": self.cancellation.to_dict(),
        }

    def __str__(self) -> str:
        lines = ["Subpopulations (loss recovered within each; per-row recovered loss = (base_i - scrub_i) / mean gap):"]
        for name, groups in self.by.items():
            for g in groups:
                lo, hi = g.lr.ci
                lines.append(f"  {name}={g.label:<10} {g.n_rows:>6} rows  {g.lr.value:7.1%}  CI [{lo:.1%}, {hi:.1%}]")
        w = self.worst
        lines.append(f"  worst {self.worst_fraction:.0%} of rows ({w.n_rows}): {w.lr.value:.1%} CI [{w.lr.ci[0]:.1%}, {w.lr.ci[1]:.1%}]")
        c = self.cancellation
        flag = "  <- errors cancel" if c.flagged else ""
        lines.append(f"  cancellation: mean |scrub - model| {c.mean_abs:.1%} of the gap, |mean| {c.abs_mean:.1%}{flag}")
        edges, counts = self.histogram
        peak = max(counts) or 1
        for lo, hi, k in zip(edges[:-1], edges[1:], counts):
            lines.append(f"  [{lo:6.2f}, {hi:6.2f})  {'#' * round(30 * k / peak):<30} {k}")
        return "\n".join(lines)


def row_values(result: Result) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """``(m [n], b [seeds, n], s [seeds, n], w [n] or None)`` in float64 (raises if the result has no rows)."""
    rows = result.rows
    if rows is None:
        raise ReportError(f"result {result.hypothesis!r} carries no per-row values; scrub it with scrub.evaluate")
    w = None if rows.weights is None else rows.weights.double()
    return rows.model.double().cpu(), rows.base.double().cpu(), rows.scrub.double().cpu(), w


def _mean(v: Tensor, w: Optional[Tensor]) -> float:
    return float(v.mean() if w is None else (w * v).sum() / w.sum())


def per_row(result: Result) -> Tensor:
    """``[n]`` per-row recovered loss ``r_i`` (see the module docstring); its weighted mean is the LR."""
    m, b, s, w = row_values(result)
    gap = _mean(b.mean(0) - m, w)
    return (b.mean(0) - s.mean(0)) / gap


def group_lr(result: Result, mask: Tensor, level: float, n_boot: int = 1000) -> Estimate:
    """Loss recovered on the rows where ``mask`` ([n] bool) holds, with SE and CI."""
    m, b, s, w = row_values(result)
    idx = torch.nonzero(mask.cpu(), as_tuple=True)[0]
    lr = loss_recovered(m[idx], b[:, idx], s[:, idx], level=level, n_boot=n_boot,
                        weights=None if w is None else w[idx])
    return Estimate(lr.value, lr.stderr, lr.ci)


def feature_rows(feature: Feature, data: Dataset, reference: Tensor, where: str) -> tuple[Tensor, list[str]]:
    """``(ids [n], labels)``: the class of each reference row under a per-row ``feature``."""
    if not isinstance(feature, Feature) or feature.exact:
        raise FeatureError(f"{where}: {feature!r} is not a feature to split rows by; give e.g. Feature.extra('period')")
    values = feature.evaluate(data)
    if values.per_position:
        raise FeatureError(
            f"{where}: feature {feature.name!r} has one value per position; subpopulations are sets of rows, so "
            f"give a feature with one value per row (shape [n])"
        )
    raw = feature.fn(data).reshape(-1)
    ids = values.ids[reference.to(values.ids.device)].cpu()
    labels = {}
    for i, r in zip(values.ids.tolist(), raw.tolist()):
        labels.setdefault(i, str(r))
    return ids, [labels[i] for i in range(values.n_classes)]


TINY_CLASS = 10  # a by= class with fewer reference rows than this is named in the findings


def check_by(by: Sequence[Feature], data: Dataset, n: Optional[int]) -> list[str]:
    """Check the ``by=`` features on the reference rows (the first ``n``) before any forward pass.

    Returns findings for small classes (fewer than ``TINY_CLASS`` rows).

    Raises:
        FeatureError: a feature is per position or fails to evaluate; ReportError: a class of a single
            row (its loss recovered has no spread, so no interval).
    """
    reference = torch.arange(len(data) if n is None else min(n, len(data)))
    notes = []
    for feature in by:
        ids, labels = feature_rows(feature, data, reference, "report(by=...)")
        counts = torch.bincount(ids)
        for k in torch.nonzero(counts, as_tuple=True)[0].tolist():
            if counts[k] == 1:
                raise ReportError(
                    f"report(by=[{feature.name}]): the class {feature.name}={labels[k]} holds a single reference row, "
                    f"so its loss recovered has no interval; merge small classes into one (a coarser feature) or "
                    f"use more rows"
                )
            if counts[k] < TINY_CLASS:
                notes.append(f"subpopulations: {feature.name}={labels[k]} has only {int(counts[k])} rows; its interval is wide")
    return notes


def subpopulations(result: Result, data: Dataset, by: Sequence[Feature] = (), *, worst_fraction: float = 0.05,
                   bins: int = 20, level: Optional[float] = None, n_boot: int = 1000) -> Subpopulations:
    """The subpopulation analysis of ``result`` (scrubbed on ``data``); see the module docstring.

    Raises:
        FeatureError: a ``by`` feature is per position or not a feature.
    """
    level = result.ci_level if level is None else level
    ref = result.rows.reference
    groups: dict[str, tuple[GroupLR, ...]] = {}
    for feature in by:
        ids, labels = feature_rows(feature, data, ref, "report(by=...)")
        found = []
        for k in torch.unique(ids).tolist():
            mask = ids == k
            found.append(GroupLR(labels[k], int(mask.sum()), group_lr(result, mask, level, n_boot)))
        groups[feature.name] = tuple(found)
    r = per_row(result)
    finite = r[torch.isfinite(r)]
    if len(finite):
        lo, hi = float(finite.min()), float(finite.max())
        hi = hi if hi > lo else lo + 1.0
        counts = torch.histc(finite.float(), bins=bins, min=lo, max=hi)
        edges = tuple(lo + (hi - lo) * i / bins for i in range(bins + 1))
        histogram = (edges, tuple(int(c) for c in counts.tolist()))
    else:
        histogram = ((), ())
    k = max(1, math.ceil(worst_fraction * len(r)))
    order = torch.argsort(torch.nan_to_num(r, nan=math.inf))
    mask = torch.zeros(len(r), dtype=torch.bool)
    mask[order[:k]] = True
    worst = GroupLR(f"worst {worst_fraction:.0%}", k, group_lr(result, mask, level, n_boot))
    m, b, s, w = row_values(result)
    gap = abs(_mean(b.mean(0) - m, w))
    d = s.mean(0) - m
    mean_abs, abs_mean = _mean(d.abs(), w) / gap, abs(_mean(d, w)) / gap
    flagged = bool(mean_abs > CANCEL_RATIO * abs_mean and mean_abs > CANCEL_SHARE)
    return Subpopulations(groups, histogram, worst, float(worst_fraction), Cancellation(mean_abs, abs_mean, flagged))


# ---- HTML (from the JSON form, as the rest of the report) -----------------------------------------


def histogram_svg(hist: dict, width: int = 520, height: int = 200) -> str:
    """Bars of the per-row recovered loss histogram, with the 0 and 1 marks."""
    from scrub.reporting.svg import esc

    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if not counts or any(e is None for e in edges):
        return "<p>(no finite per-row values)</p>"
    left, right, top, bottom = 40, 12, 10, 34
    lo, hi, peak = edges[0], edges[-1], max(counts) or 1
    sx = lambda v: left + (v - lo) / (hi - lo) * (width - left - right)  # noqa: E731
    base = height - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="histogram of per-row recovered loss">']
    for a, b, k in zip(edges[:-1], edges[1:], counts):
        h = (base - top) * k / peak
        parts.append(f'<rect x="{sx(a):.1f}" y="{base - h:.1f}" width="{max(sx(b) - sx(a) - 1, 0.5):.1f}" height="{h:.1f}" '
                     f'fill="#4a7ab5"><title>[{a:.3g}, {b:.3g}): {k} rows</title></rect>')
    parts.append(f'<line x1="{left}" y1="{base}" x2="{width - right}" y2="{base}" stroke="#888"/>')
    for mark in (0.0, 1.0):
        if lo <= mark <= hi:
            parts.append(f'<line x1="{sx(mark):.1f}" y1="{top}" x2="{sx(mark):.1f}" y2="{base}" stroke="#c33" stroke-dasharray="4 3"/>')
            parts.append(f'<text x="{sx(mark):.1f}" y="{base + 14}" font-size="11" text-anchor="middle">{mark:.0f}</text>')
    parts.append(f'<text x="{left}" y="{base + 14}" font-size="11" text-anchor="start">{lo:.3g}</text>')
    parts.append(f'<text x="{width - right}" y="{base + 14}" font-size="11" text-anchor="end">{hi:.3g}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" font-size="12" text-anchor="middle">'
                 f'{esc("per-row recovered loss (its mean is the loss recovered)")}</text>')
    parts.append(f'<text x="4" y="{top + 10}" font-size="11">{peak}</text></svg>')
    return "".join(parts)


def section_html(d: dict) -> str:
    """The report's "Where it fails" section from ``Subpopulations.to_dict()``."""
    from scrub.reporting.svg import esc, fmt_pct

    def ci(e: dict) -> str:
        lo, hi = (e.get("ci") or [None, None])[:2]
        return f"{fmt_pct(e.get('value'))} [{fmt_pct(lo)}, {fmt_pct(hi)}]"

    out = ['<h3>Where it fails</h3><figure class="histogram">', histogram_svg(d.get("per_row_histogram") or {}),
           "<figcaption>Per-row recovered loss: (baseline - scrubbed) of each row over the mean (baseline - model) gap. "
           "Rows at 0 are no better than the baseline; the spread shows what the mean hides.</figcaption></figure>"]
    w, c = d.get("worst") or {}, d.get("cancellation") or {}
    rows = [f"<tr><td>worst {fmt_pct(w.get('fraction'), 0)} of rows</td><td>{w.get('n_rows')}</td>"
            f"<td>{ci(w.get('loss_recovered') or {})}</td></tr>"]
    for name, groups in (d.get("by") or {}).items():
        for g in groups:
            rows.append(f"<tr><td>{esc(name)} = {esc(g.get('label'))}</td><td>{g.get('n_rows')}</td>"
                        f"<td>{ci(g.get('loss_recovered') or {})}</td></tr>")
    out.append('<table class="subpopulations"><caption>Loss recovered within each subpopulation [CI]</caption>'
               "<tr><th>rows</th><th>n</th><th>LR [CI]</th></tr>" + "".join(rows) + "</table>")
    flag = " <b>(flagged: errors of opposite sign cancel)</b>" if c.get("flagged") else ""
    out.append(f"<p>Cancellation: mean |scrubbed - model| per row is {fmt_pct(c.get('mean_abs_difference'))} of the "
               f"baseline gap; |mean (scrubbed - model)| is {fmt_pct(c.get('abs_mean_difference'))}.{flag}</p>")
    return "".join(out)
