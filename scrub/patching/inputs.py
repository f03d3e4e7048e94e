"""The checked inputs of a sweep: the model view, the clean rows, their corrupted partners, the
metric and the direction. Everything here runs before any forward pass.

Corrupted rows come from one of:

* the dataset itself: ``data.extras["corrupt_tokens"]`` (``[n, pos]``; see `paired`), the default;
* a second `Dataset` (or a ``[n, pos]`` token tensor) row-aligned with ``data``: paired prompts
  such as IOI's "ABC" for "ABB"; its lengths and scored positions must match ``data``'s;
* a `scrub.Feature`: each row's partner is drawn (with a ``torch.Generator`` seeded by each of
  ``seeds``) uniformly from the rows that share the row's value of that feature, as causal
  scrubbing resamples. The draw may pick the row itself.
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs
import torch
from torch import Tensor

from scrub.data import Dataset, Feature, sample_matching
from scrub.errors import DatasetError, FeatureError, MetricError, ScrubError
from scrub.metrics import Metric, logit_diff, resolve, target_logit
from scrub.model import ModelView

__all__ = ["CORRUPT_KEY", "paired", "view_of", "Inputs", "prepare", "DIRECTIONS"]

CORRUPT_KEY = "corrupt_tokens"
DIRECTIONS = ("denoise", "noise")


def paired(data: Dataset, corrupted: "Dataset | Tensor") -> Dataset:
    """``data`` carrying its row-aligned corrupted tokens in ``extras["corrupt_tokens"]``.

    Raises:
        DatasetError: the corrupted rows differ in number or length, or (for a `Dataset`) score
            other positions than ``data``.
    """
    tokens = _corrupt_tokens(data, corrupted)
    return attrs.evolve(data, extras={**data.extras, CORRUPT_KEY: tokens})


def view_of(model: Any) -> ModelView:
    """The `ModelView` of ``model`` (a view, or a model `ModelView` can read)."""
    if isinstance(model, ModelView):
        return model
    build = getattr(ModelView, "from_model", None) or ModelView.from_hooked
    return build(model)


def _corrupt_tokens(data: Dataset, corrupted: "Dataset | Tensor") -> Tensor:
    if isinstance(corrupted, Dataset):
        if corrupted.tokens.shape != data.tokens.shape:
            raise DatasetError(
                f"paired rows must match the clean rows one for one: dataset {data.name!r} is "
                f"{tuple(data.tokens.shape)}, the corrupted {corrupted.name!r} is "
                f"{tuple(corrupted.tokens.shape)}; pad or truncate both to the same length"
            )
        if not torch.equal(corrupted.loss_mask.cpu(), data.loss_mask.cpu()):
            bad = (corrupted.loss_mask.cpu() != data.loss_mask.cpu()).any(dim=1).nonzero().flatten()
            raise DatasetError(
                f"paired rows must score the same positions (the answer positions): rows "
                f"{bad[:5].tolist()} of {corrupted.name!r} differ from {data.name!r}; align the prompts "
                f"so that each pair's answer sits at one position"
            )
        return corrupted.tokens.to(data.device)
    if isinstance(corrupted, Tensor):
        if corrupted.shape != data.tokens.shape or corrupted.dtype.is_floating_point or corrupted.dtype == torch.bool:
            raise DatasetError(
                f"corrupted tokens must be an integer tensor of the clean tokens' shape "
                f"{tuple(data.tokens.shape)}, got {corrupted.dtype} {tuple(corrupted.shape)}"
            )
        return corrupted.to(data.device).long()
    raise DatasetError(
        f"corrupt= must be paired rows (a Dataset or a [n, pos] token tensor, or None to read "
        f"data.extras[{CORRUPT_KEY!r}]) or a scrub.Feature to resample by; got {type(corrupted).__name__}"
    )


@attrs.frozen(eq=False)
class Inputs:
    """A sweep's checked inputs. ``data`` is the clean dataset repeated once per seed
    (``n_rows = len(seeds) * n`` rows); ``corrupt`` its partners' tokens, row for row."""

    view: ModelView
    data: Dataset
    corrupt: Tensor
    metric: Metric
    direction: str
    described: str
    seeds: tuple[int, ...]

    @property
    def base_tokens(self) -> Tensor:
        """The run that gets patched: corrupted for denoising, clean for noising."""
        return self.corrupt if self.direction == "denoise" else self.data.tokens

    @property
    def source_tokens(self) -> Tensor:
        """Where patched values come from: clean for denoising, corrupted for noising."""
        return self.data.tokens if self.direction == "denoise" else self.corrupt

    def read_positions(self) -> list[int]:
        """Positions whose logits the metric reads (every position for a metric reading all)."""
        read = self.metric.positions(self.data)
        return list(range(self.data.n_pos)) if read is None else read


def _check_fits(view: ModelView, tokens: Tensor, what: str) -> None:
    cfg = view.config
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= cfg.d_vocab:
        raise DatasetError(
            f"{what} has token ids in [{lo}, {hi}] but the model's vocabulary is 0..{cfg.d_vocab - 1}; "
            f"tokenise the clean and the corrupted rows with the model's tokenizer"
        )
    if tokens.shape[1] > cfg.n_ctx:
        raise DatasetError(f"{what} has {tokens.shape[1]} positions; the model's context is {cfg.n_ctx}")


def default_metric(data: Dataset) -> Metric:
    """Logit difference against ``extras["wrong_target"]`` where the dataset has a wrong answer;
    otherwise minus the right answer's logit (`scrub.metrics.target_logit`), linear in the
    output like a logit difference."""
    return logit_diff() if "wrong_target" in data.extras else target_logit()


def _metric(metric: Any, data: Dataset) -> Metric:
    if metric is None:
        return default_metric(data)
    try:
        return resolve(metric)
    except MetricError:
        raise
    except Exception as exc:  # resolve returns None for a non-callable
        raise MetricError(f"metric={metric!r} is not a metric: {exc}") from None


def prepare(model: Any, data: Any, corrupt: Any, metric: Any, direction: Any, seeds: Any) -> Inputs:
    """Check every argument and resolve the corrupted rows (no forward pass).

    Raises:
        DatasetError, FeatureError, MetricError, ScrubError: see the messages.
    """
    if not isinstance(data, Dataset):
        raise DatasetError(f"data must be a scrub.Dataset, got {type(data).__name__}")
    if direction not in DIRECTIONS:
        raise ScrubError(
            f"direction={direction!r} is not a patching direction; use 'denoise' (clean values into "
            f"the corrupted run: what is sufficient) or 'noise' (corrupted values into the clean run: "
            f"what is necessary)"
        )
    seeds = _seeds(seeds)
    view = view_of(model)
    _check_fits(view, data.tokens, f"dataset {data.name!r}")
    scored = data.targets[data.loss_mask]
    if int(scored.min()) < 0 or int(scored.max()) >= view.config.d_vocab_out:
        raise DatasetError(
            f"dataset {data.name!r} has scored targets in [{int(scored.min())}, {int(scored.max())}] outside "
            f"the model's outputs 0..{view.config.d_vocab_out - 1}; tokenise the answers for this model"
        )
    resolved = _metric(metric, data)
    if resolved is None:
        raise MetricError(f"metric={metric!r} is not a metric; pass a name, a scrub Metric or a callable")
    if isinstance(corrupt, Feature):
        tokens, described = _resample(data, corrupt, seeds)
        rows = data.rows(torch.arange(len(data)).repeat(len(seeds)))
    else:
        if len(seeds) > 1:
            raise ScrubError(
                f"seeds={list(seeds)}: paired rows are fixed, so several seeds would repeat one sweep; "
                f"pass one seed, or corrupt=<a Feature> to resample partners per seed"
            )
        if corrupt is None:
            if CORRUPT_KEY not in data.extras:
                raise DatasetError(
                    f"dataset {data.name!r} carries no corrupted rows (extras[{CORRUPT_KEY!r}]); pass "
                    f"corrupt=<paired Dataset or tokens>, corrupt=<a scrub.Feature>, or build the data "
                    f"with scrub.patching.paired(clean, corrupted)"
                )
            tokens = _corrupt_tokens(data, data.extras[CORRUPT_KEY])
            described = "paired rows (extras)"
        else:
            tokens = _corrupt_tokens(data, corrupt)
            described = f"paired rows ({getattr(corrupt, 'name', 'tokens')})"
        rows = data
    _check_fits(view, tokens, "the corrupted rows")
    return Inputs(view, rows, tokens, resolved, direction, described, seeds)


def _seeds(seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = (seeds,)
    try:
        out = tuple(seeds)
    except TypeError:
        raise ScrubError(f"seeds={seeds!r}: pass an int or a list of ints") from None
    if not out or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in out):
        raise ScrubError(f"seeds={seeds!r}: pass a non-empty list of non-negative ints")
    return out


def _resample(data: Dataset, feature: Feature, seeds: Sequence[int]) -> tuple[Tensor, str]:
    values = feature.evaluate(data)
    if values.per_position:
        raise FeatureError(
            f"corrupt=Feature({feature.name!r}) is per position; a corrupted partner is one whole row, "
            f"so resample by a per-row feature (e.g. Feature.any(), Feature.extra('label'))"
        )
    reference = torch.arange(len(data), device=data.device)
    parts = []
    for seed in seeds:
        generator = torch.Generator(device=data.device).manual_seed(seed)
        parts.append(data.tokens[sample_matching(reference, values, generator)])  # [n, pos]
    return torch.cat(parts), f"resampled by {feature.name} (seeds {list(seeds)})"
