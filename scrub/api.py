"""`scrub.evaluate`: scrub one hypothesis and return a `Result`.

The pipeline is one-way: hypothesis + dataset + seed -> `plan` -> `Schedule` -> engine ->
per-row metric values -> `Result`. The baseline (by default the root alone: every input of the
output resampled, labels from the reference) is planned with the same seed, so it shares the
root's "other" datum with the hypothesis (common random numbers).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from scrub.data import Dataset
from scrub.errors import DatasetError, ScrubError
from scrub.hypothesis import Hypothesis
from scrub.metrics import Metric, loss_recovered, resolve
from scrub.plan import FeatureCache, Schedule, plan
from scrub.result import Result, RowValues, mean_se

__all__ = ["evaluate", "evaluate_many", "seed_list", "baseline_of", "make_engine", "ENGINES", "run_schedules", "check_data_fits"]

ENGINES: dict[str, Callable] = {}
DEFAULT_ENGINE = "reference"


def _register_engines() -> None:
    from scrub.engine.reference import ReferenceEngine

    ENGINES.setdefault("reference", ReferenceEngine)
    try:  # the batched engine, when present, becomes the default
        from scrub.engine.batched import BatchedEngine
    except ImportError:
        return
    ENGINES.setdefault("batched", BatchedEngine)
    global DEFAULT_ENGINE
    DEFAULT_ENGINE = "batched"


def make_engine(name: Optional[str], model, data: Dataset, **options):
    """An engine by name (``"batched"`` or ``"reference"``; ``None`` for the default)."""
    _register_engines()
    name = name or DEFAULT_ENGINE
    if name not in ENGINES:
        raise ScrubError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}")
    options = {k: v for k, v in options.items() if v is not None}
    if name == "reference" and options:
        raise ScrubError(
            f"options {sorted(options)} apply to the batched engine; the reference engine runs one tree "
            f"node at a time (bound its memory with batch_size instead)"
        )
    return ENGINES[name](model, data, **options)


def baseline_of(h: Hypothesis) -> Hypothesis:
    """The default baseline: the output alone (all its inputs resampled)."""
    base = Hypothesis("output alone")
    base.output()
    return base


def check_data_fits(model, data: Dataset) -> None:
    """Refuse a dataset whose tokens or length do not fit the model."""
    cfg = model.cfg
    if int(data.tokens.max()) >= cfg.d_vocab or int(data.tokens.min()) < 0:
        raise DatasetError(
            f"dataset {data.name!r} has token ids in [{int(data.tokens.min())}, {int(data.tokens.max())}] "
            f"but the model's vocabulary is 0..{cfg.d_vocab - 1}; tokenise the data for this model"
        )
    if data.n_pos > cfg.n_ctx:
        raise DatasetError(
            f"dataset {data.name!r} has sequences of {data.n_pos} positions; the model's context is {cfg.n_ctx}"
        )
    scored = data.targets[data.loss_mask]
    if len(scored) and (int(scored.max()) >= cfg.d_vocab_out or int(scored.min()) < 0):
        raise DatasetError(
            f"dataset {data.name!r} has scored targets outside the model's outputs 0..{cfg.d_vocab_out - 1}"
        )


def at_every_position(logits: Tensor, positions: Optional[Sequence[int]], n_pos: int) -> Tensor:
    """Logits computed at ``positions`` only (``[n, q, vocab]``) laid out at every position
    (``[n, n_pos, vocab]``), NaN where they were not computed; as they are when ``positions`` is None."""
    if positions is None:
        return logits
    full = logits.new_full((logits.shape[0], n_pos, logits.shape[2]), float("nan"))
    full[:, list(positions)] = logits
    return full


def run_schedules(engine, schedules: Sequence[Schedule], metric: Metric, batch_size: Optional[int]) -> list[Tensor]:
    """Per-row metric values ``[n]`` for each schedule, in chunks of ``batch_size`` reference rows."""
    data = engine.data
    n = schedules[0].n_rows
    size = batch_size or n
    out: list[list[Tensor]] = [[] for _ in schedules]
    for start in range(0, n, size):
        rows = torch.arange(start, min(n, start + size))
        chunk = [s.select(rows) for s in schedules]
        batch = data.rows(chunk[0].reference)
        positions = metric.positions(batch)  # None: the metric reads every position
        clean = None
        if metric.needs_clean:
            clean = at_every_position(engine.clean_logits(chunk[0].reference, positions), positions, data.n_pos)
        if hasattr(engine, "run_many"):
            logits = engine.run_many(chunk, positions=positions)
        else:
            logits = [engine.run(s, positions=positions) for s in chunk]
        for i, lg in enumerate(logits):
            out[i].append(metric(at_every_position(lg, positions, data.n_pos), batch, clean).cpu())
    return [torch.cat(parts) for parts in out]


def evaluate(
    h: Hypothesis,
    model,
    data: Dataset,
    *,
    seeds: Union[int, Sequence[int]] = 1,
    metric: Union[None, str, Metric, Callable] = None,
    engine: Optional[str] = None,
    baseline: Optional[Hypothesis] = None,
    n: Optional[int] = None,
    batch_size: Optional[int] = None,
    ci_level: float = 0.95,
    n_boot: int = 1000,
    memory_budget_mb: Optional[float] = None,
) -> Result:
    """Scrub ``h`` on ``model`` over ``data`` and report the loss it recovers.

    Args:
        h: the hypothesis.
        model: a TransformerLens ``HookedTransformer``.
        data: the dataset (reference rows and the pool that data are drawn from).
        seeds: number of sampling seeds (``0..k-1``) or an explicit list.
        metric: ``"cross_entropy"`` (default), ``"accuracy"``, ``"kl"``, ``"logit_diff"``, a
            `scrub.metrics.Metric`, or a callable ``(logits, batch) -> [n]`` (lower is better).
        engine: ``"batched"`` (default) or ``"reference"``.
        baseline: the hypothesis whose metric counts as 0% (default: the output alone).
        n: use the first ``n`` rows as reference rows (default: all).
        batch_size: reference rows per chunk (bounds memory).
        ci_level, n_boot: the bootstrap confidence interval.
        memory_budget_mb: the batched engine's working-memory budget (default 4096).

    Returns:
        A `Result` with loss recovered, its SE and CI, and M_model / M_base / M_scrub.

    Raises:
        ScrubError: any invalid hypothesis, dataset, metric or engine (before any forward pass).
    """
    return evaluate_many(
        [h], model, data, seeds=seeds, metric=metric, engine=engine, baseline=baseline, n=n,
        batch_size=batch_size, ci_level=ci_level, n_boot=n_boot, memory_budget_mb=memory_budget_mb,
    )[0]


def seed_list(seeds: Union[int, Sequence[int]]) -> list[int]:
    """``k`` -> ``[0..k-1]``; a sequence is taken as it is."""
    found = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not found:
        raise ScrubError(f"seeds must be a positive count or a non-empty list, got {seeds!r}")
    return found


def evaluate_many(
    hypotheses: Sequence[Hypothesis],
    model,
    data: Dataset,
    *,
    seeds: Union[int, Sequence[int]] = 1,
    metric: Union[None, str, Metric, Callable] = None,
    engine: Union[None, str, object] = None,
    baseline: Optional[Hypothesis] = None,
    n: Optional[int] = None,
    batch_size: Optional[int] = None,
    ci_level: float = 0.95,
    n_boot: int = 1000,
    progress: bool = False,
    memory_budget_mb: Optional[float] = None,
) -> list[Result]:
    """`evaluate` for several hypotheses at once, sharing rows, seeds, the baseline and the engine.

    Every hypothesis is scrubbed on the same reference rows with the same seeds (common random
    numbers); with the batched engine all their schedules run in one call per seed, sharing one
    clean pass, so dozens of variants cost little more than one.
    """
    if not hypotheses:
        raise ScrubError("evaluate_many(): give at least one hypothesis")
    metric = resolve(metric)
    seeds_ = seed_list(seeds)
    check_data_fits(model, data)
    base_h = baseline or baseline_of(hypotheses[0])
    for h in [*hypotheses, base_h]:
        h.validate(model, n_pos=data.n_pos)
    reference = torch.arange(len(data) if n is None else min(int(n), len(data)), device=data.device)
    features = FeatureCache(data)
    runner = engine if hasattr(engine, "run") else make_engine(engine, model, data, memory_budget_mb=memory_budget_mb)
    base_rows: list[Tensor] = []
    scrub_rows: list[list[Tensor]] = [[] for _ in hypotheses]
    class_sizes: list[dict] = [{} for _ in hypotheses]
    for seed in _progress(seeds_, progress, f"scrubbing {len(hypotheses)} hypotheses"):
        schedules = [plan(h, data, seed, reference=reference, features=features) for h in hypotheses]
        schedules.append(plan(base_h, data, seed, reference=reference, features=features))
        values = run_schedules(runner, schedules, metric, batch_size)
        base_rows.append(values[-1])
        for i, (schedule, value) in enumerate(zip(schedules, values[:-1])):
            scrub_rows[i].append(value)
            class_sizes[i] = schedule.class_sizes
    model_rows = _model_values(runner, data, reference, metric, batch_size)
    base = torch.stack(base_rows)
    return [
        build_result(
            h.name, base_h.name, metric, data, runner.name, seeds_, reference,
            model_rows, base, torch.stack(scrub_rows[i]), class_sizes[i], ci_level, n_boot,
        )
        for i, h in enumerate(hypotheses)
    ]


def _progress(items, enabled: bool, label: str):
    """``items`` wrapped in a progress bar when ``enabled``."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=label, unit="seed")


def _model_values(engine, data: Dataset, reference: Tensor, metric: Metric, batch_size: Optional[int]) -> Tensor:
    size = batch_size or len(reference)
    parts = []
    for start in range(0, len(reference), size):
        rows = reference[start : start + size]
        batch = data.rows(rows)
        positions = metric.positions(batch)
        logits = at_every_position(engine.clean_logits(rows, positions), positions, data.n_pos)
        parts.append(metric(logits, batch, logits).cpu())
    return torch.cat(parts)


def build_result(
    name: str,
    baseline_name: str,
    metric: Metric,
    data: Dataset,
    engine_name: str,
    seeds: Sequence[int],
    reference: Tensor,
    model_rows: Tensor,
    base_rows: Tensor,
    scrub_rows: Tensor,
    class_sizes: dict,
    ci_level: float = 0.95,
    n_boot: int = 1000,
    memory_budget_mb: Optional[float] = None,
) -> Result:
    """Assemble a `Result` from per-row values (shared by evaluate, compare and reports)."""
    lr = loss_recovered(model_rows, base_rows, scrub_rows, level=ci_level, n_boot=n_boot)
    (mm, mm_se), (mb, mb_se), (ms, ms_se) = mean_se(model_rows), mean_se(base_rows), mean_se(scrub_rows)
    warnings = []
    for feat, (lo, med, _hi) in class_sizes.items():
        if lo < 2:
            warnings.append(
                f"feature {feat!r} has equivalence classes of a single row (median {med:g}); resampling "
                f"from them returns the reference itself, so the claim is barely tested there"
            )
    if abs(mb - mm) < 1e-9:
        warnings.append("the baseline and the model score the same; loss recovered is undefined (NaN)")
    return Result(
        hypothesis=name,
        metric=metric.name,
        lower_is_better=metric.lower_is_better,
        loss_recovered=lr.value,
        stderr=lr.stderr,
        ci=lr.ci,
        ci_level=ci_level,
        m_model=mm,
        m_base=mb,
        m_scrub=ms,
        m_model_se=mm_se,
        m_base_se=mb_se,
        m_scrub_se=ms_se,
        n_rows=int(len(reference)),
        seeds=tuple(int(s) for s in seeds),
        lr_per_seed=lr.per_seed,
        stderr_seeds=lr.stderr_seeds,
        engine=engine_name,
        baseline=baseline_name,
        dataset=data.name,
        class_sizes=dict(class_sizes),
        warnings=tuple(warnings),
        rows=RowValues(reference=reference.cpu(), model=model_rows, base=base_rows, scrub=scrub_rows),
    )
