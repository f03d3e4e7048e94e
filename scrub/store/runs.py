"""The store's side of one scrub call: which cells it needs, which are there, and writing new ones.

`scrub.api.scrub_many` builds a `StoredRun` for its hypotheses, computes only `missing` cells, hands
the computed rows to `put` and assembles every result from the cells (`results`). Nothing here
runs a model: the values come in from the caller, and results are built by the caller's function.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from scrub.data import Dataset
from scrub.hypothesis import Hypothesis
from scrub.store.cells import STORE_FORMAT, Cell, Store
from scrub.store.keys import (
    cell_key,
    dataset_fingerprint,
    hypothesis_fingerprint,
    metric_fingerprint,
    model_fingerprint,
    scrub_version,
    tensor_digest,
)

__all__ = ["StoredRun", "feature_values", "model_device", "class_sizes_from_meta", "weighted_mean"]


def feature_values(hypotheses: Sequence[Hypothesis], features) -> dict[int, Tensor]:
    """``id(feature) -> class ids`` on the cache's dataset, for every non-exact feature claimed."""
    out: dict[int, Tensor] = {}
    for h in hypotheses:
        for claim in h.claims:
            f = claim.feature
            if f is not None and not f.exact and id(f) not in out:
                out[id(f)] = features(f).ids
    return out


def model_device(model) -> str:
    """The type of the device the model's weights are on (cpu, cuda, mps)."""
    for tensor in model.parameters():
        return tensor.device.type
    return "cpu"


def weighted_mean(values: Tensor, weights: Optional[Tensor]) -> float:
    v = values.double()
    if weights is None:
        return float(v.mean())
    c = weights.double()
    return float((c * v).sum() / c.sum())


def class_sizes_from_meta(found: list) -> dict:
    """Class sizes as `scrub.plan` gives them, in its order: feature -> (min: int, median: float, max: int)."""
    return {k: (int(lo), float(med), int(hi)) for k, lo, med, hi in found}


class StoredRun:
    """The cells of one call: ``hypotheses`` x ``options.seeds`` against ``baseline``.

    Args:
        store: the store; hypotheses, baseline, model, data, options: the call's;
        reference: ``[n]`` reference rows; features: the call's `scrub.plan.FeatureCache`;
        engine: the engine's name.
        model_fp: the model's fingerprint when known (saves hashing the weights again).
        device: the device type the cells are computed on (default: the options' or the model's).
    """

    def __init__(self, store: Store, hypotheses: Sequence[Hypothesis], baseline: Hypothesis, model, data: Dataset,
                 options: Any, reference: Tensor, features, engine: str, *, model_fp: Optional[str] = None,
                 device: Optional[str] = None) -> None:
        self.store, self.hypotheses, self.baseline, self.data, self.options = store, list(hypotheses), baseline, data, options
        self.seeds = list(options.seeds)
        values = feature_values([*self.hypotheses, baseline], features)
        common = {
            "format": STORE_FORMAT,
            "scrub": scrub_version(),
            "model": model_fp or model_fingerprint(model),
            "dataset": dataset_fingerprint(data),
            "metric": metric_fingerprint(options.metric),
            "engine": engine,
            "batch_size": options.batch_size,
            "memory_budget_mb": options.memory_budget_mb,
            # the device type (cpu, cuda, mps): where the numbers were computed
            "device": device or (options.device.type if options.device is not None else model_device(model)),
            "reference": tensor_digest(reference),
            "baseline": hypothesis_fingerprint(baseline, values),
        }
        self.parts: dict[tuple[int, int], dict] = {}
        self.cells: dict[tuple[int, int], Optional[Cell]] = {}
        for i, h in enumerate(self.hypotheses):
            fingerprint = hypothesis_fingerprint(h, values)
            for seed in self.seeds:
                parts = {**common, "hypothesis": fingerprint, "seed": int(seed)}
                self.parts[i, seed] = parts
                self.cells[i, seed] = store.read(cell_key(parts))

    def missing(self) -> dict[int, list[int]]:
        """``{hypothesis index: [seeds]}`` of the cells not in the store, seeds in the call's order."""
        out: dict[int, list[int]] = {}
        for (i, seed), cell in self.cells.items():
            if cell is None:
                out.setdefault(i, []).append(seed)
        return out

    def put(self, indices: Sequence[int], rows: Any) -> None:
        """Write the cells computed in ``rows`` (a `scrub.api.Rows` for the hypotheses ``indices``)."""
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        metric = self.options.metric
        for j, i in enumerate(indices):
            for seed, scrub_rows in rows.scrub[j].items():
                parts = self.parts[i, seed]
                base = rows.base[seed]
                m_model, m_base, m_scrub = (weighted_mean(v, rows.weights) for v in (rows.model, base, scrub_rows))
                gap = m_base - m_model
                meta = {
                    "key_parts": parts,
                    "hypothesis": self.hypotheses[i].name,
                    "baseline": self.baseline.name,
                    "dataset": self.data.name,
                    "metric": metric.name,
                    "lower_is_better": metric.lower_is_better,
                    "engine": rows.engine,
                    "seed": int(seed),
                    "n_rows": int(rows.reference.numel()),
                    "class_sizes": [[k, *v] for k, v in rows.class_sizes[j].items()],  # a list keeps the order
                    "summary": {"m_model": m_model, "m_base": m_base, "m_scrub": m_scrub,
                                "loss_recovered": (m_base - m_scrub) / gap if gap != 0 else None},
                    "created": now,
                }
                cell = Cell(cell_key(parts), meta, rows.reference, rows.model, base, scrub_rows, rows.weights)
                self.store.write(cell)
                self.cells[i, seed] = cell

    def results(self, build: Callable) -> list:
        """One result per hypothesis, from its cells (``build`` is `scrub.api.build_result`)."""
        out = []
        for i, h in enumerate(self.hypotheses):
            cells = [self.cells[i, seed] for seed in self.seeds]
            if any(c is None for c in cells):
                raise RuntimeError("StoredRun.results() before every cell was put")  # a bug, not user input
            first = cells[0]
            out.append(build(
                h.name, self.baseline.name, self.options.metric, self.data.name, first.meta["engine"], self.seeds,
                first.reference, first.model, torch.stack([c.base for c in cells]),
                torch.stack([c.scrub for c in cells]), class_sizes_from_meta(first.meta["class_sizes"]),
                self.options.ci_level, self.options.n_boot, weights=first.weights,
            ))
        return out
