"""`scrub.worst_subpopulation`: the conjunction of feature values where a hypothesis recovers least.

The hypothesis is scrubbed once; every subpopulation is then a set of its reference rows, scored
from the per-row values (`scrub.reporting.subpopulations`: the loss recovered within the rows,
``mean_S (b - s) / mean_S (b - m)``). Candidates are every conjunction ``f1 = v1 and f2 = v2 ...``
over every non-empty subset of the features with at least ``min_size`` rows. The interval of the
winner is the usual bootstrap over its rows; it does not account for the search (the minimum of
many estimates is biased low), so read it as descriptive and confirm on fresh rows.
"""

from __future__ import annotations

import itertools
import math
from typing import Optional, Sequence

import attrs
import torch

from scrub.api import evaluate
from scrub.data import Dataset, Feature
from scrub.errors import OptionsError
from scrub.hypothesis import Hypothesis
from scrub.metrics import Estimate
from scrub.reporting.subpopulations import feature_rows, group_lr, row_values
from scrub.result import Result

__all__ = ["worst_subpopulation", "WorstSubpopulation"]


@attrs.frozen(eq=False)
class WorstSubpopulation:
    """The subpopulation (a conjunction of feature values) with the lowest loss recovered."""

    conditions: tuple[tuple[str, str], ...]  # (feature name, value)
    n_rows: int
    lr: Estimate
    rows: torch.Tensor  # [k] dataset rows in it
    overall: Result
    candidates: int

    def __str__(self) -> str:
        where = " and ".join(f"{f}={v}" for f, v in self.conditions)
        lo, hi = self.lr.ci
        return (f"worst subpopulation of {self.overall.hypothesis!r} (of {self.candidates} with enough rows): {where}: "
                f"{self.n_rows} rows, loss recovered {self.lr.value:.1%} CI [{lo:.1%}, {hi:.1%}] "
                f"(overall {self.overall.loss_recovered:.1%}); the interval ignores the search over subpopulations")

    def to_dict(self) -> dict:
        return {"conditions": [list(c) for c in self.conditions], "n_rows": self.n_rows, "loss_recovered": self.lr.to_dict(),
                "overall": self.overall.loss_recovered, "candidates": self.candidates}


def worst_subpopulation(
    h: Hypothesis,
    model,
    data: Dataset,
    features: Sequence[Feature],
    *,
    min_size: int = 20,
    max_order: Optional[int] = None,
    result: Optional[Result] = None,
    **evaluate_options,
) -> WorstSubpopulation:
    """Scrub ``h`` and find the conjunction of values of ``features`` (per-row features) with at least
    ``min_size`` reference rows where loss recovered is lowest.

    Args:
        features: features with one value per row (e.g. ``Feature.extra("period")``).
        min_size: the smallest subpopulation considered (>= 2).
        max_order: at most this many features in a conjunction (default: all).
        result: a `Result` of ``h`` on ``data`` to reuse instead of scrubbing again.
        evaluate_options: passed to `scrub.evaluate` (seeds, metric, n, ...).

    Raises:
        OptionsError / FeatureError: no features, a per-position feature, a bad min_size, or no
            subpopulation that large; all before any forward pass.
    """
    if isinstance(features, Feature) or not isinstance(features, (list, tuple)) or not features:
        raise OptionsError("worst_subpopulation(): features must be a non-empty list of scrub.Feature (one value per row)")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 2:
        raise OptionsError(f"worst_subpopulation(): min_size must be an int >= 2, got {min_size!r}")
    n = evaluate_options.get("n")
    reference = torch.arange(len(data) if n is None else min(int(n), len(data)))
    columns = [feature_rows(f, data, reference, "worst_subpopulation()") for f in features]  # checks first
    order = len(features) if max_order is None else max(1, min(int(max_order), len(features)))
    candidates = []
    for k in range(1, order + 1):
        for subset in itertools.combinations(range(len(features)), k):
            keys = torch.stack([columns[i][0] for i in subset], dim=1)  # [n, k]
            values, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
            for j in torch.nonzero(counts >= min_size, as_tuple=True)[0].tolist():
                conds = tuple((features[i].name, columns[i][1][int(values[j, c])]) for c, i in enumerate(subset))
                candidates.append((conds, inverse == j))
    if not candidates:
        raise OptionsError(
            f"worst_subpopulation(): no conjunction of {[f.name for f in features]} has {min_size} or more of the "
            f"{len(reference)} reference rows; lower min_size or use more rows"
        )
    if result is None:
        result = evaluate(h, model, data, **evaluate_options)
    m, b, s, w = row_values(result)
    num, den = b.mean(0) - s.mean(0), b.mean(0) - m
    weights = torch.ones_like(m) if w is None else w

    def point(mask) -> float:
        d = float((weights[mask] * den[mask]).sum())
        return float((weights[mask] * num[mask]).sum()) / d if d != 0 else math.nan

    scored = [(point(mask), conds, mask) for conds, mask in candidates]
    finite = [x for x in scored if math.isfinite(x[0])]
    _value, conds, mask = min(finite or scored, key=lambda x: x[0])
    lr = group_lr(result, mask, result.ci_level)
    return WorstSubpopulation(conds, int(mask.sum()), lr, result.rows.reference[mask], result, len(candidates))
