"""`Result`: the outcome of scrubbing one hypothesis (loss recovered and everything behind it)."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import attrs
from torch import Tensor

from scrub.errors import ScrubError

__all__ = ["Result", "RowValues"]


@attrs.frozen(eq=False)
class RowValues:
    """Per-row metric values behind a Result (kept for paired comparisons and reports)."""

    reference: Tensor  # [n] reference rows
    model: Tensor  # [n] unscrubbed model
    base: Tensor  # [seeds, n] baseline hypothesis
    scrub: Tensor  # [seeds, n] the hypothesis
    weights: Optional[Tensor] = None  # [n] each row's weight in the means (None: equal; see Metric.weighting)


def _fmt(x: float, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{100 * x:.1f}%" if pct else f"{x:.4f}"


@attrs.frozen(eq=False)
class Result:
    """Loss recovered by a hypothesis, with the metric values and uncertainty behind it.

    Attributes:
        hypothesis: the hypothesis name.
        metric: the metric name; ``lower_is_better`` says its direction.
        loss_recovered: ``(M_base - M_scrub) / (M_base - M_model)``; never clipped.
        stderr: standard error of loss_recovered over rows (and seeds, see `scrub.metrics`).
        ci: bootstrap confidence interval at ``ci_level``.
        m_model, m_base, m_scrub: mean metric of the model, the baseline and the hypothesis.
        n_rows, seeds: the reference rows and sampling seeds used.
        lr_per_seed, stderr_seeds: loss recovered per seed and the spread between seeds.
        class_sizes: feature name -> (min, median, max) equivalence-class size.
        warnings: things a careful reader should know (tiny equivalence classes, ...).
        rows: per-row values (`RowValues`).
    """

    hypothesis: str
    metric: str
    lower_is_better: bool
    loss_recovered: float
    stderr: float
    ci: tuple[float, float]
    ci_level: float
    m_model: float
    m_base: float
    m_scrub: float
    m_model_se: float
    m_base_se: float
    m_scrub_se: float
    n_rows: int
    seeds: tuple[int, ...]
    lr_per_seed: tuple[float, ...]
    stderr_seeds: float
    engine: str
    baseline: str
    dataset: str
    class_sizes: dict = attrs.field(factory=dict)
    warnings: tuple[str, ...] = ()
    rows: RowValues | None = attrs.field(default=None, repr=False)

    def __str__(self) -> str:
        lo, hi = self.ci
        lines = [
            f"{self.hypothesis}: loss recovered {_fmt(self.loss_recovered, True)} "
            f"± {_fmt(self.stderr, True)} (SE); {int(100 * self.ci_level)}% CI [{_fmt(lo, True)}, {_fmt(hi, True)}]",
            f"  {self.metric}: model {_fmt(self.m_model)}, scrubbed {_fmt(self.m_scrub)}, "
            f"baseline ({self.baseline}) {_fmt(self.m_base)}",
            f"  {self.n_rows} reference rows of {self.dataset!r}, seeds {list(self.seeds)}, engine {self.engine}",
        ]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Every number (no per-row tensors), JSON-ready."""
        out = attrs.asdict(self, recurse=False, filter=lambda a, v: a.name != "rows")
        out["ci"] = list(self.ci)
        out["seeds"] = list(self.seeds)
        out["lr_per_seed"] = list(self.lr_per_seed)
        out["warnings"] = list(self.warnings)
        out["class_sizes"] = {k: list(v) for k, v in self.class_sizes.items()}
        return out

    def _repr_html_(self) -> str:
        """The result as HTML for a notebook cell (as in the report; no scripts)."""
        return _presenter("html")(self.to_dict())

    def plot(self):
        """Loss recovered with its CI as a matplotlib `Figure` (save it as PNG, PDF or SVG)."""
        return _presenter("figure")(self.to_dict())


# How a `Result` draws itself. The reporting layer sits above this module, so it registers its
# renderers here when it loads (`scrub.reporting.notebook`, imported by `scrub.reporting`, which
# `import scrub` loads); this module never imports it.
_PRESENTERS: dict[str, Callable[[dict], Any]] = {}


def register_presenters(**presenters: Callable[[dict], Any]) -> None:
    """Set the functions that draw a `Result.to_dict()`: ``html`` (a notebook fragment) and
    ``figure`` (a matplotlib `Figure`)."""
    _PRESENTERS.update(presenters)


def _presenter(kind: str) -> Callable[[dict], Any]:
    found = _PRESENTERS.get(kind)
    if found is None:
        raise ScrubError(
            f"no {kind} renderer is registered for Result; import scrub.reporting (import scrub does) "
            f"before displaying or plotting a Result"
        )
    return found


def mean_se(values: Tensor, weights: Optional[Tensor] = None) -> tuple[float, float]:
    """Mean and standard error over rows of seed-averaged values (``[n]`` or ``[seeds, n]``).

    With ``weights`` ``c_i`` (``[n]``, e.g. scored tokens per row, and ``v_i`` a row's mean, so
    ``s_i = c_i v_i`` is its sum) the mean is the ratio ``R = sum_i s_i / sum_i c_i`` and its SE
    is the ratio estimator's: the SE over rows of ``(s_i - R c_i) / mean(c)``.
    """
    v = values.double()
    if v.ndim == 2:
        v = v.mean(0)
    if weights is None:
        se = float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")
        return float(v.mean()), se
    c = weights.double().to(v.device).flatten()  # [n]
    s = c * v  # [n] per-row sums
    ratio = s.sum() / c.sum()
    linear = (s - ratio * c) / c.mean()  # [n]
    se = float(linear.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")
    return float(ratio), se
