"""Metrics scored per reference row, loss recovered, standard errors and bootstrap intervals.

A `Metric` maps the scrubbed logits of a batch of reference rows to one number per row. Built-in:
`cross_entropy` (per-token, masked), `cross_entropy_tokens`, `logit_diff`, `accuracy`,
`kl_to_model`, `target_logit`, `squared_error`; any callable ``(logits, batch) -> [n]`` works too
(see `resolve`).

Each metric declares the kind of targets it reads (``"class"``: integer class ids below the
model's output size; ``"real"``: real numbers; ``"none"``: no targets; ``"any"``: unknown, not
checked), checked against the dataset before any forward pass (`Metric.check_data`), and how rows
are weighted when averaged (``"rows"``: every row counts the same; ``"tokens"``: every scored
token counts the same, so a row weighs as much as it has scored positions).

Loss recovered is ``(M_base - M_scrub) / (M_base - M_model)``. The same expression serves
higher-is-better metrics (numerator and denominator both change sign), so no mirroring code is
needed. It is never clipped.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import attrs
import torch
from jaxtyping import Float
from torch import Tensor

from scrub.data import Dataset
from scrub.errors import DatasetError, MetricError

__all__ = [
    "Metric",
    "cross_entropy",
    "logit_diff",
    "accuracy",
    "kl_to_model",
    "target_logit",
    "cross_entropy_tokens",
    "squared_error",
    "resolve",
    "Estimate",
    "LossRecovered",
    "loss_recovered",
    "lr_combination",
    "mean_difference",
    "METRICS",
]

MetricFn = Callable[[Tensor, Dataset, Optional[Tensor]], Tensor]
TARGET_KINDS = ("class", "real", "none", "any")


@attrs.frozen
class Metric:
    """A per-row score of the model's logits on a batch of reference rows.

    Attributes:
        name: label for reports.
        fn: ``fn(logits [n, pos, vocab], batch, clean_logits or None) -> [n]``.
        lower_is_better: True for losses, False for accuracies and logit differences.
        needs_clean: whether ``fn`` reads the unscrubbed model's logits (e.g. KL).
        reads: which positions of the logits ``fn`` reads: ``"all"`` (the default, for any
            callable) or ``"scored"`` (only where ``batch.loss_mask`` is True; every built-in
            metric). With ``"scored"`` the engines compute the logits only at positions some
            row of the batch scores and pass NaN elsewhere, which saves most of the work when
            few positions are scored. Declare it for your own metric only if it is true.
        targets: the kind of ``batch.targets`` ``fn`` reads at the scored positions: ``"class"``
            (integer class ids in ``0..d_vocab_out-1``), ``"real"`` (real numbers), ``"none"``
            (targets are not read) or ``"any"`` (not declared: not checked; the default).
        weighting: ``"rows"`` (the default: the mean over rows of the per-row values) or
            ``"tokens"`` (each row weighted by its number of scored positions: with per-row
            means of per-token values, that is the pooled mean over every scored token).
        output_index: for ``targets="real"``, the output channel ``fn`` reads (checked
            against the model's output size before any forward pass).
        extras: the dataset extras ``fn`` needs (checked before any forward pass).
    """

    name: str
    fn: MetricFn = attrs.field(repr=False)
    lower_is_better: bool = True
    needs_clean: bool = False
    reads: str = attrs.field(default="all", validator=attrs.validators.in_(("all", "scored")))
    targets: str = attrs.field(default="any", validator=attrs.validators.in_(TARGET_KINDS))
    weighting: str = attrs.field(default="rows", validator=attrs.validators.in_(("rows", "tokens")))
    output_index: Optional[int] = None
    extras: tuple[str, ...] = ()

    def row_weights(self, batch: Dataset) -> Optional[Float[Tensor, "n"]]:
        """Each row's weight in the averages (``None``: equal weights)."""
        if self.weighting == "rows":
            return None
        return batch.loss_mask.sum(dim=1).to(torch.float64).cpu()  # [n] scored positions per row

    def check_data(self, data: Dataset, d_vocab_out: int) -> None:
        """Refuse a dataset whose targets (or extras) this metric cannot read, before any forward pass.

        Raises:
            DatasetError: the targets' dtype or range does not fit the metric's target kind.
            MetricError: an extra the metric reads is missing, or its output channel does not exist.
        """
        for key in self.extras:
            if key not in data.extras:
                raise MetricError(
                    f"metric {self.name} needs dataset extras[{key!r}]; dataset {data.name!r} has "
                    f"{sorted(data.extras)} (add it, or choose another metric)"
                )
        if self.targets in ("any", "none"):
            return
        targets = data.targets
        scored = targets[data.loss_mask]
        if self.targets == "class":
            if targets.dtype == torch.bool or targets.dtype.is_floating_point or targets.dtype.is_complex:
                raise DatasetError(
                    f"metric {self.name!r} reads class-index targets (integers in 0..{d_vocab_out - 1}); dataset "
                    f"{data.name!r} has {targets.dtype} targets. For real-valued targets use "
                    f"metric='squared_error'; for class ids, convert them with targets.long()"
                )
            if len(scored) and (int(scored.max()) >= d_vocab_out or int(scored.min()) < 0):
                raise DatasetError(
                    f"dataset {data.name!r} has scored targets outside the model's outputs 0..{d_vocab_out - 1} "
                    f"(found [{int(scored.min())}, {int(scored.max())}]); metric {self.name!r} reads class-index "
                    f"targets; fix the targets or mask the positions that are not scored"
                )
            return
        # real-valued targets
        if targets.dtype == torch.bool or targets.dtype.is_complex:
            raise DatasetError(
                f"metric {self.name!r} reads real-valued targets; dataset {data.name!r} has {targets.dtype} "
                f"targets; give a float (or integer) tensor"
            )
        if len(scored) and not bool(torch.isfinite(scored.double()).all()):
            raise DatasetError(
                f"metric {self.name!r} reads real-valued targets; dataset {data.name!r} has NaN or infinite "
                f"targets at scored positions; fix them or mask those positions"
            )
        if self.output_index is not None and not 0 <= self.output_index < d_vocab_out:
            raise MetricError(
                f"metric {self.name!r} reads output channel {self.output_index}, but the model has "
                f"{d_vocab_out} outputs (0..{d_vocab_out - 1}); choose an index below {d_vocab_out}"
            )

    def positions(self, batch: Dataset) -> Optional[list[int]]:
        """The positions whose logits this metric reads on ``batch`` (``None``: every position)."""
        if self.reads == "all":
            return None
        return torch.nonzero(batch.loss_mask.any(dim=0)).flatten().tolist()

    def __call__(self, logits: Tensor, batch: Dataset, clean_logits: Optional[Tensor] = None) -> Float[Tensor, "n"]:
        read = logits if self.reads == "all" else logits[batch.loss_mask.to(logits.device)]
        if torch.isnan(read).any():
            raise MetricError(
                f"metric {self.name!r}: the model produced NaN logits on dataset {batch.name!r}; "
                f"check the weights and inputs (a NaN anywhere makes every loss meaningless)"
            )
        value = self.fn(logits, batch, clean_logits)
        if not isinstance(value, Tensor) or value.shape != (len(batch),):
            raise MetricError(
                f"metric {self.name!r} must return one value per row, a tensor of shape ({len(batch)},); "
                f"got {getattr(value, 'shape', type(value).__name__)}"
            )
        return value.detach().to(torch.float64)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the scored positions of each row: values, mask ``[n, pos]`` -> ``[n]``.

    Values at unscored positions are ignored even when they are NaN (logits not computed)."""
    mask = mask.bool()
    kept = torch.where(mask, values, torch.zeros_like(values))  # [n, pos]
    return kept.sum(dim=1) / mask.to(values.dtype).sum(dim=1)


def _cross_entropy(logits: Tensor, batch: Dataset, clean: Optional[Tensor]) -> Tensor:
    logprobs = logits.float().log_softmax(dim=-1)  # [n, pos, vocab]
    targets = batch.targets.to(logits.device).clamp(min=0)  # unscored targets may be -1
    nll = -logprobs.gather(-1, targets[..., None])[..., 0]  # [n, pos]
    return _masked_mean(nll, batch.loss_mask.to(logits.device))


def _accuracy(logits: Tensor, batch: Dataset, clean: Optional[Tensor]) -> Tensor:
    hit = (logits.argmax(dim=-1) == batch.targets.to(logits.device)).float()  # [n, pos]
    return _masked_mean(hit, batch.loss_mask.to(logits.device))


def _kl(logits: Tensor, batch: Dataset, clean: Optional[Tensor]) -> Tensor:
    if clean is None:
        raise MetricError("metric 'kl_to_model' needs the unscrubbed logits; the engine did not pass them")
    p_log = clean.float().log_softmax(dim=-1)  # [n, pos, vocab] the model's distribution
    q_log = logits.float().log_softmax(dim=-1)
    kl = (p_log.exp() * (p_log - q_log)).sum(dim=-1)  # [n, pos]
    return _masked_mean(kl, batch.loss_mask.to(logits.device))


def cross_entropy() -> Metric:
    """Mean cross-entropy of the targets over each row's scored positions, then the mean over rows
    (every row counts the same, however many positions it scores; lower is better)."""
    return Metric("cross_entropy", _cross_entropy, lower_is_better=True, reads="scored", targets="class")


def cross_entropy_tokens() -> Metric:
    """Cross-entropy pooled over every scored token of every row (lower is better).

    The per-row values are those of `cross_entropy` (each row's mean over its scored positions);
    averages weight each row by its number of scored positions, so the mean is
    ``sum_i s_i / sum_i c_i`` (``s_i``: row ``i``'s summed loss, ``c_i``: its scored positions).
    Standard errors are those of a ratio estimator over rows (see `scrub.result.mean_se`).
    """
    return Metric("cross_entropy_tokens", _cross_entropy, lower_is_better=True, reads="scored", targets="class",
                  weighting="tokens")


def accuracy() -> Metric:
    """Fraction of scored positions where the top logit is the target (higher is better)."""
    return Metric("accuracy", _accuracy, lower_is_better=False, reads="scored", targets="class")


def kl_to_model() -> Metric:
    """KL(model || scrubbed) of the output distributions at the scored positions (lower is better).

    Reads no targets (only the loss mask)."""
    return Metric("kl_to_model", _kl, lower_is_better=True, needs_clean=True, reads="scored", targets="none")


def squared_error(index: int = 0) -> Metric:
    """Squared error of a real-valued read-out (lower is better): for a regression head.

    At every scored position, the read-out is the model's output ``logits[..., index]`` (the
    unembedding's channel ``index``, default 0, taken raw: no softmax) and the value is
    ``(logits[row, pos, index] - targets[row, pos]) ** 2``; a row's value is the mean over its
    scored positions. Targets must be real numbers (float, or integers read as numbers).
    """
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise MetricError(f"squared_error(index={index!r}): index must be an output channel, an integer >= 0")

    def squared(logits: Tensor, batch: Dataset, clean: Optional[Tensor]) -> Tensor:
        mask = batch.loss_mask.to(logits.device)
        target = torch.where(mask, batch.targets.to(logits.device).double(), 0.0)  # [n, pos]
        error = (logits[..., index].double() - target) ** 2  # [n, pos]
        return _masked_mean(error, mask)

    return Metric("squared_error", squared, lower_is_better=True, reads="scored", targets="real", output_index=index)


def logit_diff(wrong: str = "wrong_target") -> Metric:
    """``logit[target] - logit[wrong]`` averaged over scored positions (higher is better).

    ``wrong`` names the dataset extra holding the competing token, ``[n]`` or ``[n, pos]``.
    """

    def diff(logits: Tensor, batch: Dataset, clean: Optional[Tensor]) -> Tensor:
        if wrong not in batch.extras:
            raise MetricError(
                f"metric logit_diff needs dataset extras[{wrong!r}] (the competing token); "
                f"dataset {batch.name!r} has {sorted(batch.extras)}"
            )
        other = batch.extras[wrong].to(logits.device).long()
        if other.ndim == 1:
            other = other[:, None].expand(-1, logits.shape[1])
        targets = batch.targets.to(logits.device).clamp(min=0)
        right = logits.gather(-1, targets[..., None])[..., 0]  # [n, pos]
        wrong_logit = logits.gather(-1, other.clamp(min=0)[..., None])[..., 0]
        return _masked_mean((right - wrong_logit).float(), batch.loss_mask.to(logits.device))

    return Metric("logit_diff", diff, lower_is_better=False, reads="scored", targets="class", extras=(wrong,))


def target_logit() -> Metric:
    """Minus the target's logit at the scored positions (lower is better).

    Linear in the final residual stream, so it does not saturate: use it for the compensation
    check when cross-entropy's saturation would make independent contributions look redundant.
    """

    def minus_logit(logits: Tensor, batch: Dataset, clean: Optional[Tensor]) -> Tensor:
        targets = batch.targets.to(logits.device).clamp(min=0)
        right = logits.gather(-1, targets[..., None])[..., 0]  # [n, pos]
        return _masked_mean(-right.float(), batch.loss_mask.to(logits.device))

    return Metric("target_logit", minus_logit, lower_is_better=True, reads="scored", targets="class")


METRICS: dict[str, Callable[[], Metric]] = {
    "target_logit": target_logit,
    "cross_entropy": cross_entropy,
    "cross_entropy_tokens": cross_entropy_tokens,
    "squared_error": squared_error,
    "ce": cross_entropy,
    "loss": cross_entropy,
    "accuracy": accuracy,
    "kl": kl_to_model,
    "kl_to_model": kl_to_model,
    "logit_diff": logit_diff,
}


def resolve(metric: Union[None, str, Metric, Callable]) -> Metric:
    """A `Metric` from a name, a Metric, or a callable ``(logits, batch) -> [n]`` (lower is better).

    Raises:
        MetricError: unknown name or a non-callable.
    """
    if metric is None:
        return cross_entropy()
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric not in METRICS:
            raise MetricError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)} or pass a callable")
        return METRICS[metric]()
    if callable(metric):
        name = getattr(metric, "__name__", "custom")
        return Metric(name, lambda logits, batch, clean: metric(logits, batch), lower_is_better=True)
    raise MetricError(f"metric must be a name, a scrub.metrics.Metric or a callable, got {metric!r}")


@attrs.frozen
class Estimate:
    """A number with its standard error and a bootstrap confidence interval."""

    value: float
    stderr: float
    ci: tuple[float, float]

    def excludes_zero(self) -> bool:
        """Whether the confidence interval lies wholly on one side of zero."""
        lo, hi = self.ci
        return (lo > 0 and hi > 0) or (lo < 0 and hi < 0)

    def to_dict(self) -> dict:
        return {"value": self.value, "stderr": self.stderr, "ci": list(self.ci)}


@attrs.frozen
class LossRecovered:
    """Loss recovered with its uncertainty (see `loss_recovered`)."""

    value: float
    stderr: float
    ci: tuple[float, float]
    per_seed: tuple[float, ...]
    stderr_seeds: float


def _ratio(base: Tensor, scrub: Tensor, model: Tensor) -> Tensor:
    return (base - scrub) / (base - model)


def _percentile_ci(draws: Tensor, level: float) -> tuple[float, float]:
    draws = draws[torch.isfinite(draws)]
    if len(draws) == 0:
        return (float("nan"), float("nan"))
    alpha = (1.0 - level) / 2
    return (float(torch.quantile(draws, alpha)), float(torch.quantile(draws, 1 - alpha)))


def _bootstrap(n: int, n_boot: int, seed: int, statistic: Callable[[Tensor], Tensor]) -> Tensor:
    """``statistic(idx)`` for ``n_boot`` resamples ``idx [k, n]`` of the rows, in blocks of 100."""
    generator = torch.Generator().manual_seed(seed)
    draws = []
    for start in range(0, n_boot, 100):
        idx = torch.randint(n, (min(100, n_boot - start), n), generator=generator)  # [k, n]
        draws.append(statistic(idx))
    return torch.cat(draws)


def _row_scale(weights: Optional[Tensor], n: int) -> Optional[Tensor]:
    """Per-row factors ``w_i / mean(w)`` (``None``: equal weights), checked."""
    if weights is None:
        return None
    w = torch.as_tensor(weights).double().cpu().flatten()
    if w.shape != (n,) or not bool(torch.isfinite(w).all()) or bool((w <= 0).any()):
        raise MetricError(f"row weights must be {n} finite positive numbers, got shape {tuple(w.shape)}")
    return w / w.mean()


def lr_combination(
    model: Float[Tensor, "n"],
    base: Float[Tensor, "seeds n"],
    scrubs: Sequence[Tensor],
    coefs: Sequence[float],
    *,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    weights: Optional[Float[Tensor, "n"]] = None,
) -> Estimate:
    """``sum_i coefs[i] * LR_i`` where ``LR_i = (M_base - M_scrub_i) / (M_base - M_model)``.

    All terms share the baseline and model values (the same rows and seeds), so differences
    of loss recovered (``coefs=[1, -1]``) and interactions (``[1, 1, -1, -1]``) are paired.
    Each row's values are averaged over seeds first; the standard error is the delta-method
    error over rows and the interval is the percentile bootstrap over rows.

    With ``weights`` (``[n]``, e.g. scored tokens per row) every mean is the weighted mean
    ``sum_i w_i v_i / sum_i w_i``; the estimate stays a ratio of per-row sums, so the same
    linearisation and the same row bootstrap (recomputing the ratio) apply.
    """
    if len(scrubs) != len(coefs) or not scrubs:
        raise MetricError("lr_combination(): give one coefficient per scrubbed value set")
    b, m = base.double().mean(0), model.double()  # [n]
    scale = _row_scale(weights, b.shape[0])
    c = torch.tensor([float(x) for x in coefs], dtype=torch.float64)
    s = torch.stack([x.double().mean(0) for x in scrubs])  # [k, n]
    if scale is not None:  # weighted means: scale each row's values; the ratio of means does the rest
        b, m, s = b * scale, m * scale, s * scale[None]
    total = float(c.sum())
    combo = total * b - (c[:, None] * s).sum(0)  # [n] the numerator per row

    def value_of(idx) -> Tensor:
        return combo[idx].mean(-1) / (b[idx].mean(-1) - m[idx].mean(-1))

    n = b.shape[0]
    value = float(value_of(torch.arange(n)))
    denom = b.mean() - m.mean()
    influence = (combo - value * (b - m)) / denom  # [n]
    stderr = float(influence.std() / math.sqrt(n)) if n > 1 else float("nan")
    ci = _percentile_ci(_bootstrap(n, n_boot, seed, value_of), level)
    return Estimate(value=value, stderr=stderr, ci=ci)


def mean_difference(
    after: Tensor,
    before: Tensor,
    *,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    weights: Optional[Tensor] = None,
) -> Estimate:
    """Mean of the per-row difference ``after - before`` (seed-averaged), SE and bootstrap CI.

    With ``weights`` the mean is ``sum_i w_i d_i / sum_i w_i`` with the ratio estimator's SE."""
    diff = after.double().reshape(-1, after.shape[-1]).mean(0) - before.double().reshape(-1, before.shape[-1]).mean(0)
    n = diff.shape[0]
    if weights is None:
        value = float(diff.mean())
        stderr = float(diff.std() / math.sqrt(n)) if n > 1 else float("nan")
        ci = _percentile_ci(_bootstrap(n, n_boot, seed, lambda idx: diff[idx].mean(-1)), level)
        return Estimate(value=value, stderr=stderr, ci=ci)
    w = _row_scale(weights, n)  # [n], mean 1
    value = float((w * diff).sum() / w.sum())
    influence = w * (diff - value)  # [n] the ratio estimator's linearisation (mean(w) is 1)
    stderr = float(influence.std() / math.sqrt(n)) if n > 1 else float("nan")
    ci = _percentile_ci(_bootstrap(n, n_boot, seed, lambda idx: (w[idx] * diff[idx]).sum(-1) / w[idx].sum(-1)), level)
    return Estimate(value=value, stderr=stderr, ci=ci)


def loss_recovered(
    model: Float[Tensor, "n"],
    base: Float[Tensor, "seeds n"],
    scrub: Float[Tensor, "seeds n"],
    *,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    weights: Optional[Float[Tensor, "n"]] = None,
) -> LossRecovered:
    """Loss recovered, its standard error and a bootstrap confidence interval.

    Rows are the unit of resampling: each row's metric is first averaged over seeds (draws are
    independent across rows, so the spread over rows carries both sources of noise). The standard
    error is the delta-method error of the ratio of means; the interval is the percentile
    bootstrap over rows (paired: model, baseline and scrub share the resampled rows).
    ``stderr_seeds`` is the spread of the per-seed values (NaN with one seed). ``weights``
    (``[n]``) makes every mean a weighted one (see `lr_combination`).
    """
    estimate = lr_combination(model, base, [scrub], [1.0], level=level, n_boot=n_boot, seed=seed, weights=weights)
    scale = _row_scale(weights, model.shape[-1])

    def mean(v: Tensor) -> Tensor:
        return v.double().mean() if scale is None else (scale * v.double()).sum() / scale.sum()

    m = mean(model)
    per_seed = tuple(float(_ratio(mean(base[j]), mean(scrub[j]), m)) for j in range(base.shape[0]))
    stderr_seeds = float(torch.tensor(per_seed).std() / math.sqrt(len(per_seed))) if len(per_seed) > 1 else float("nan")
    return LossRecovered(
        value=estimate.value, stderr=estimate.stderr, ci=estimate.ci, per_seed=per_seed, stderr_seeds=stderr_seeds
    )
