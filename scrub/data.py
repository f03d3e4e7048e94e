"""Datasets, features of the input, and sampling from a feature's equivalence classes.

A `Dataset` holds token sequences with per-position targets and a loss mask. A `Feature` is a
vectorised function of a dataset that returns one value per row (``[n]``) or one per row and
position (``[n, pos]``). Causal scrubbing resamples a component's input from the rows that agree
with the reference on the claimed feature; `sample_matching` does that draw.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Mapping, Optional

import attrs
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from scrub.errors import DatasetError, FeatureError

__all__ = ["Dataset", "Feature", "EXACT", "FeatureValues", "PoolIndex", "sample_matching"]


def _check_dataset(instance: "Dataset", attribute, value) -> None:
    tokens, targets, mask = instance.tokens, instance.targets, instance.loss_mask
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise DatasetError(
            f"Dataset {instance.name!r}: tokens must be a 2-D integer tensor [n, pos], "
            f"got {type(tokens).__name__} of shape {getattr(tokens, 'shape', None)}"
        )
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise DatasetError(
            f"Dataset {instance.name!r} is empty (tokens shape {tuple(tokens.shape)}); "
            f"scrubbing needs at least one row and one position"
        )
    if tokens.dtype not in (torch.int64, torch.int32):
        raise DatasetError(f"Dataset {instance.name!r}: tokens must be int64, got {tokens.dtype}")
    if targets.shape != tokens.shape:
        raise DatasetError(
            f"Dataset {instance.name!r}: targets must have the shape of tokens {tuple(tokens.shape)}, "
            f"got {tuple(targets.shape)}; give one target per position (mask the ones not scored)"
        )
    if mask.shape != tokens.shape or mask.dtype != torch.bool:
        raise DatasetError(
            f"Dataset {instance.name!r}: loss_mask must be a bool tensor of shape {tuple(tokens.shape)}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise DatasetError(
            f"Dataset {instance.name!r}: rows {empty[:5].tolist()} have no scored position in "
            f"loss_mask; every row needs at least one (drop those rows or fix the mask)"
        )
    for key, extra in instance.extras.items():
        if not isinstance(extra, Tensor) or extra.shape[:1] != tokens.shape[:1]:
            raise DatasetError(
                f"Dataset {instance.name!r}: extras[{key!r}] must be a tensor with one entry per row "
                f"({tokens.shape[0]}), got shape {getattr(extra, 'shape', None)}"
            )


def _frozen_mapping(value: Optional[Mapping[str, Tensor]]) -> Mapping[str, Tensor]:
    return dict(value or {})


@attrs.frozen(eq=False)
class Dataset:
    """Token sequences with per-position targets and a loss mask.

    Attributes:
        tokens: ``[n, pos]`` input tokens.
        targets: ``[n, pos]`` what the output at each position should predict (the next token for
            a language model, the class at the read-out position for a classifier).
        loss_mask: ``[n, pos]`` which positions the metric scores; every row needs one.
        name: a label for reports.
        extras: task-specific per-row tensors (e.g. repeat length, alternative targets).
    """

    tokens: Int[Tensor, "n pos"] = attrs.field()
    targets: Int[Tensor, "n pos"] = attrs.field()
    loss_mask: Bool[Tensor, "n pos"] = attrs.field(validator=_check_dataset)
    name: str = "dataset"
    extras: Mapping[str, Tensor] = attrs.field(factory=dict, converter=_frozen_mapping)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def rows(self, index: Int[Tensor, "m"]) -> "Dataset":
        """The dataset restricted to (or re-ordered by) ``index``."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.tokens.device)
        return Dataset(
            tokens=self.tokens[index],
            targets=self.targets[index],
            loss_mask=self.loss_mask[index],
            name=self.name,
            extras={k: v[index] for k, v in self.extras.items()},
        )

    def head(self, n: int) -> "Dataset":
        """The first ``n`` rows."""
        if n <= 0:
            raise DatasetError(f"Dataset.head(n) needs n >= 1, got {n}")
        return self.rows(torch.arange(min(n, len(self))))

    def to(self, device: torch.device | str) -> "Dataset":
        return Dataset(
            tokens=self.tokens.to(device),
            targets=self.targets.to(device),
            loss_mask=self.loss_mask.to(device),
            name=self.name,
            extras={k: v.to(device) for k, v in self.extras.items()},
        )

    def fingerprint(self) -> str:
        """A short hash of the contents, for reproducibility records."""
        digest = hashlib.sha256()
        for tensor in (self.tokens, self.targets, self.loss_mask, *self.extras.values()):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, n={len(self)}, pos={self.n_pos}, "
            f"scored positions={int(self.loss_mask.sum())}, extras={sorted(self.extras)})"
        )


@attrs.frozen
class FeatureValues:
    """A feature evaluated on a dataset, as integer class ids.

    ``ids`` is ``[n]`` for a per-example feature and ``[n, pos]`` for a per-position one; two
    rows (or two row-positions at the same position) are equivalent when their ids are equal.
    """

    feature: "Feature"
    ids: Tensor
    n_classes: int

    @property
    def per_position(self) -> bool:
        return self.ids.ndim == 2

    def class_sizes(self) -> Tensor:
        """Size of the equivalence class each entry belongs to (same shape as ``ids``)."""
        keys = _keys(self.ids)
        counts = torch.bincount(keys.flatten())
        return counts[keys]


@attrs.frozen(eq=False)
class Feature:
    """A function of the input that a claim says is all its component carries.

    ``fn(dataset)`` must return a tensor with one value per row (``[n]``) or per row and position
    (``[n, pos]``); any dtype whose values can be compared for equality. Build ready-made ones with
    `Feature.token`, `Feature.prev_token`, `Feature.label`, `Feature.position`, `Feature.any`, or
    your own with ``Feature("name", fn)``. `EXACT` means "the same datum as the parent".
    """

    name: str
    fn: Optional[Callable[["Dataset"], Tensor]] = attrs.field(default=None, repr=False)
    exact: bool = attrs.field(default=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.exact and not callable(self.fn):
            raise FeatureError(
                f"Feature {self.name!r} needs a callable fn(dataset) -> tensor [n] or [n, pos], "
                f"got {self.fn!r}"
            )

    def __str__(self) -> str:
        return self.name

    def evaluate(self, data: Dataset) -> FeatureValues:
        """Evaluate on ``data`` and check shape and determinism.

        Raises:
            FeatureError: the result is not a tensor of shape ``[n]`` or ``[n, pos]``, or two
                calls on the same dataset disagree.
        """
        if self.exact:
            ids = torch.arange(len(data), device=data.device)
            return FeatureValues(self, ids, len(data))
        first, second = self._call(data), self._call(data)
        if first.shape != second.shape or not torch.equal(first, second):
            raise FeatureError(
                f"Feature {self.name!r} is not deterministic: two calls on dataset {data.name!r} "
                f"returned different values; features must be pure functions of the dataset "
                f"(use a fixed torch.Generator inside if it needs randomness)"
            )
        flat = first.reshape(-1) if first.dtype != torch.bool else first.reshape(-1).long()
        uniques, inverse = torch.unique(flat, return_inverse=True)
        return FeatureValues(self, inverse.reshape(first.shape).long(), int(uniques.numel()))

    def _call(self, data: Dataset) -> Tensor:
        value = self.fn(data)
        if not isinstance(value, Tensor):
            raise FeatureError(
                f"Feature {self.name!r} returned {type(value).__name__}; it must return a torch "
                f"tensor of shape [n] or [n, pos] (n={len(data)}, pos={data.n_pos})"
            )
        ok_shape = value.shape == (len(data),) or value.shape == (len(data), data.n_pos)
        if not ok_shape:
            raise FeatureError(
                f"Feature {self.name!r} returned shape {tuple(value.shape)} on dataset {data.name!r}; "
                f"expected [n]=({len(data)},) or [n, pos]=({len(data)}, {data.n_pos}); reduce extra "
                f"dimensions to one comparable value (e.g. hash a tuple into an int)"
            )
        if value.is_floating_point() and torch.isnan(value).any():
            raise FeatureError(f"Feature {self.name!r} returned NaN values, which never compare equal")
        return value.detach()

    # ---- ready-made features ----------------------------------------------------------------

    @classmethod
    def token(cls) -> "Feature":
        """The token at each position (per position)."""
        return cls("token", lambda d: d.tokens)

    @classmethod
    def prev_token(cls) -> "Feature":
        """The token at the previous position (per position; -1 at position 0)."""

        def prev(d: Dataset) -> Tensor:
            shifted = torch.full_like(d.tokens, -1)
            shifted[:, 1:] = d.tokens[:, :-1]
            return shifted

        return cls("prev_token", prev)

    @classmethod
    def label(cls) -> "Feature":
        """The target at each scored position (per position; unscored positions all agree)."""
        return cls("label", lambda d: torch.where(d.loss_mask, d.targets, torch.full_like(d.targets, -1)))

    @classmethod
    def position(cls) -> "Feature":
        """The position index: rows are resampled independently at every position."""
        return cls("position", lambda d: torch.arange(d.n_pos, device=d.device).expand(len(d), -1))

    @classmethod
    def any(cls) -> "Feature":
        """A constant: the child's datum is drawn from the whole dataset (but its subtree counts)."""
        return cls("any", lambda d: torch.zeros(len(d), dtype=torch.long, device=d.device))

    @classmethod
    def extra(cls, key: str) -> "Feature":
        """The dataset's ``extras[key]`` (per row, or per position if it is ``[n, pos]``)."""

        def read(d: Dataset) -> Tensor:
            if key not in d.extras:
                raise FeatureError(
                    f"Feature.extra({key!r}): dataset {d.name!r} has no extras[{key!r}]; "
                    f"it has {sorted(d.extras)}"
                )
            return d.extras[key]

        return cls(f"extra[{key}]", read)


EXACT = Feature("EXACT", exact=True)
"""The child's datum is its parent's datum: the claim says everything about the input matters."""


def _keys(ids: Tensor) -> Tensor:
    """Class keys that make a per-position id unique to its position: ``id * pos + t``."""
    if ids.ndim == 1:
        return ids
    n_pos = ids.shape[1]
    return ids * n_pos + torch.arange(n_pos, device=ids.device)


@attrs.frozen(eq=False)
class PoolIndex:
    """The pool grouped by class: entry ``order[start[k] + i]`` is the ``i``-th pool entry (row, or
    row * pos + position) of class key ``k``, in pool order; ``count[k]`` entries in all."""

    order: Tensor
    start: Tensor
    count: Tensor

    @classmethod
    def of(cls, values: FeatureValues) -> "PoolIndex":
        pool_keys = _keys(values.ids).flatten()  # [N] or [N * pos]
        n_keys = values.n_classes * (values.ids.shape[1] if values.per_position else 1)
        order = torch.sort(pool_keys, stable=True).indices
        count = torch.bincount(pool_keys, minlength=n_keys)
        return cls(order=order, start=torch.cumsum(count, 0) - count, count=count)


def sample_matching(
    reference: Int[Tensor, "m"] | Int[Tensor, "m pos"],
    values: FeatureValues,
    generator: torch.Generator,
    index: Optional["PoolIndex"] = None,
) -> Int[Tensor, "m"] | Int[Tensor, "m pos"]:
    """Draw, for each reference entry, a dataset row uniformly with replacement from its class.

    Args:
        reference: row indices of the parent's datum, ``[m]`` (one datum per row) or ``[m, pos]``
            (a datum per row and position).
        values: the child's feature evaluated on the whole dataset (the pool).
        generator: the source of randomness.
        index: ``PoolIndex.of(values)``, when the caller keeps it (it depends on the pool only).

    Returns:
        ``[m]`` rows for a per-example feature on a per-row reference; ``[m, pos]`` rows when the
        feature is per position (each drawn to agree at that position only).
    """
    ids = values.ids
    if values.per_position:
        n_pos = ids.shape[1]
        # ref_ids: [m, pos] the reference's value at each position
        ref_ids = ids[reference, torch.arange(n_pos)] if reference.ndim == 2 else ids[reference]
        ref_keys = _keys(ref_ids)  # [m, pos]
    else:
        if reference.ndim == 2:
            raise FeatureError(
                f"Feature {values.feature.name!r} is per example but its parent's datum is per position; "
                f"this combination does not occur in a valid schedule"
            )
        ref_keys = ids[reference]  # [m]
    index = index if index is not None else PoolIndex.of(values)
    start, count = index.start[ref_keys], index.count[ref_keys]  # count >= 1: the reference is in the pool
    uniform = torch.rand(ref_keys.shape, generator=generator, dtype=torch.float64, device=ids.device)
    pick = start + torch.minimum((uniform * count).long(), count - 1)
    flat_rows = index.order[pick]
    return flat_rows // ids.shape[1] if values.per_position else flat_rows
