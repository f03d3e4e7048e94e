"""`scrub.evaluate`: scrub one hypothesis and return a `Result`.

The pipeline is one-way: hypothesis + dataset + seed -> `plan` -> `Schedule` -> engine ->
per-row metric values -> `Result`. The baseline (by default the root alone: every input of the
output resampled, labels from the reference) is planned with the same seed, so it shares the
root's "other" datum with the hypothesis (common random numbers).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import attrs
import torch
from torch import Tensor

from scrub.data import Dataset
from scrub.errors import DatasetError, OptionsError, ScrubError
from scrub.hypothesis import Hypothesis
from scrub.metrics import Metric, loss_recovered
from scrub.engine.scoring import score_clean, score_schedules
from scrub.model.loaders import model_limits
from scrub.options import RunOptions, check_dataset, check_hypotheses, check_hypothesis, check_model, merge
from scrub.plan import FeatureCache, plan
from scrub.result import Result, RowValues, mean_se

__all__ = [
    "evaluate",
    "evaluate_many",
    "scrub_many",
    "prepare",
    "seed_list",
    "baseline_of",
    "make_engine",
    "ENGINES",
    "check_data_fits",
    "RUN_DEFAULTS",
    "compute_rows",
    "Rows",
    "engine_name",
    "build_result",
]

# the keyword defaults of `evaluate` / `evaluate_many` (RunOptions' own, but one seed)
RUN_DEFAULTS = dict(seeds=1, metric=None, engine=None, baseline=None, n=None, batch_size=None, ci_level=0.95,
                    n_boot=1000, progress=False, memory_budget_mb=None, device=None, store=None)

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


def check_data_fits(model, data: Dataset, metric: Optional[Metric] = None) -> None:
    """Refuse a dataset whose tokens or length do not fit the model, or whose targets (or extras)
    ``metric`` cannot read (`Metric.check_data`; without a metric, targets are not checked)."""
    d_vocab, d_vocab_out, n_ctx = model_limits(model)
    if int(data.tokens.max()) >= d_vocab or int(data.tokens.min()) < 0:
        raise DatasetError(
            f"dataset {data.name!r} has token ids in [{int(data.tokens.min())}, {int(data.tokens.max())}] "
            f"but the model's vocabulary is 0..{d_vocab - 1}; tokenise the data for this model"
        )
    if data.n_pos > n_ctx:
        raise DatasetError(
            f"dataset {data.name!r} has sequences of {data.n_pos} positions; the model's context is {n_ctx}; truncate the sequences"
        )
    if metric is not None:
        metric.check_data(data, d_vocab_out)


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
    device=None,
    progress: bool = False,
    store=None,
    options: Optional[RunOptions] = None,
) -> Result:
    """Scrub ``h`` on ``model`` over ``data`` and report the loss it recovers.

    Args:
        h: the hypothesis.
        model: a TransformerLens ``HookedTransformer``.
        data: the dataset (reference rows and the pool that data are drawn from).
        seeds: number of sampling seeds (``0..k-1``) or an explicit list of distinct seeds.
        metric: ``"cross_entropy"`` (default), ``"cross_entropy_tokens"``, ``"accuracy"``, ``"kl"``,
            ``"logit_diff"``, ``"target_logit"``, ``"squared_error"``, a `scrub.metrics.Metric`, or a
            callable ``(logits, batch) -> [n]`` (lower is better).
        engine: ``"batched"`` (default) or ``"reference"``.
        baseline: the hypothesis whose metric counts as 0% (default: the output alone).
        n: use the first ``n`` rows as reference rows (default: all; at least 1).
        batch_size: reference rows per chunk (bounds memory; at least 1).
        ci_level, n_boot: the bootstrap confidence interval (level in (0, 1), at least 10 draws).
        memory_budget_mb: the batched engine's working-memory budget (default 4096, at least 16).
        device: where the batched engine computes (default: the model's device).
        progress: show a progress bar.
        store: a result store directory (or `scrub.store.Store`): cells found there are read, not
            computed (no forward pass when all are there); new cells are written there.
        options: all of the above as one `scrub.options.RunOptions` (then leave the keywords alone).

    Returns:
        A `Result` with loss recovered, its SE and CI, and M_model / M_base / M_scrub.

    Raises:
        ScrubError: any invalid option, hypothesis, dataset, metric or engine (before any forward
            pass); `scrub.errors.OptionsError` for an option of the wrong type or out of range.
    """
    given = dict(seeds=seeds, metric=metric, engine=engine, baseline=baseline, n=n, batch_size=batch_size,
                 ci_level=ci_level, n_boot=n_boot, memory_budget_mb=memory_budget_mb, device=device, progress=progress,
                 store=store)
    opts = merge("evaluate()", options, RunOptions, given, RUN_DEFAULTS)
    check_hypothesis(h, "evaluate()")
    return _checked_run([h], model, data, opts, None, "evaluate()")[0]


def seed_list(seeds: Union[int, Sequence[int]]) -> list[int]:
    """``k`` -> ``[0..k-1]``; a sequence is taken as it is (checked as `RunOptions` checks seeds)."""
    return list(RunOptions(seeds=seeds).seeds)


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
    device=None,
    store=None,
    options: Optional[RunOptions] = None,
) -> list[Result]:
    """`evaluate` for several hypotheses at once, sharing rows, seeds, the baseline and the engine.

    Every hypothesis is scrubbed on the same reference rows with the same seeds (common random
    numbers); with the batched engine all their schedules run in one call per seed, sharing one
    clean pass, so dozens of variants cost little more than one. ``engine`` may also be an engine
    object built for this model and dataset (`make_engine`). Options as in `evaluate`.
    """
    runner = None
    if engine is not None and not isinstance(engine, str) and hasattr(engine, "run"):
        runner, engine = engine, None  # a ready engine: its own settings apply
    given = dict(seeds=seeds, metric=metric, engine=engine, baseline=baseline, n=n, batch_size=batch_size,
                 ci_level=ci_level, n_boot=n_boot, memory_budget_mb=memory_budget_mb, device=device, progress=progress,
                 store=store)
    opts = merge("evaluate_many()", options, RunOptions, given, RUN_DEFAULTS)
    if runner is not None and opts.engine_options():
        raise OptionsError(
            f"evaluate_many(): {sorted(opts.engine_options())} cannot apply to a ready engine object; build the "
            f"engine with them (make_engine) or pass engine='batched'"
        )
    hyps = check_hypotheses(hypotheses, "evaluate_many()")
    return _checked_run(hyps, model, data, opts, runner, "evaluate_many()")


def _checked_run(hyps: list[Hypothesis], model, data: Dataset, options: RunOptions, runner, where: str) -> list[Result]:
    prepare(hyps, model, data, options, where)
    return scrub_many(hyps, model, data, options, runner=runner)


def prepare(hypotheses: Sequence[Hypothesis], model, data: Dataset, options: RunOptions, where: str) -> None:
    """Every check of a scrub that needs no forward pass: the model and dataset are what they
    claim, the data fit the model and the metric, and every hypothesis (and the baseline) is valid.

    Raises:
        ScrubError: the first problem found (see the message).
    """
    check_model(model, where)
    check_dataset(data, where)
    check_data_fits(model, data, options.metric)
    for h in [*hypotheses, options.baseline or baseline_of(hypotheses[0])]:
        h.validate(model, n_pos=data.n_pos)


def scrub_many(
    hypotheses: Sequence[Hypothesis], model, data: Dataset, options: RunOptions, *, runner=None,
    compute: Optional[Callable[..., "Rows"]] = None,
) -> list[Result]:
    """Scrub already checked hypotheses (see `prepare`) with one options value: the common path of
    `evaluate`, `evaluate_many`, `scrub.report` and `scrub.compare`.

    With ``options.store``, every (hypothesis, seed) cell found in the store is read instead of
    computed; the missing ones are computed together (one engine, one clean pass) and written.
    ``compute`` replaces `compute_rows` (same arguments; e.g. `scrub.store.sweep`'s sharded scoring)."""
    compute = compute or compute_rows
    base_h = options.baseline or baseline_of(hypotheses[0])
    n_rows = len(data) if options.n is None else min(options.n, len(data))
    reference = torch.arange(n_rows, device=data.device)
    features = FeatureCache(data)
    seeds_ = list(options.seeds)
    if options.store is None:
        rows = compute(hypotheses, base_h, model, data, options, seeds_, reference, features, runner)
        return [rows.result(i, h.name, base_h.name, data.name, options) for i, h in enumerate(hypotheses)]
    from scrub.store.runs import StoredRun  # the store's bookkeeping (keys, cells) for this call

    run = StoredRun(options.store, hypotheses, base_h, model, data, options, reference, features,
                    engine_name(options.engine, runner))
    todo = run.missing()  # {hypothesis index: [seeds]}
    if todo:
        wanted = sorted({s for ss in todo.values() for s in ss}, key=seeds_.index)
        idx = sorted(todo)
        rows = compute([hypotheses[i] for i in idx], base_h, model, data, options, wanted, reference, features,
                            runner, only={j: todo[i] for j, i in enumerate(idx)})
        run.put(idx, rows)
    return run.results(build_result)


def engine_name(engine: Optional[str], runner=None) -> str:
    """The name of the engine a run uses (a ready engine's own, else ``engine`` or the default)."""
    if runner is not None:
        return runner.name
    _register_engines()
    return engine or DEFAULT_ENGINE


@attrs.frozen(eq=False)
class Rows:
    """Per-row values of a call: the model's ``[n]``, the baseline's ``{seed: [n]}`` and each
    hypothesis's ``{seed: [n]}``, with row weights ``[n]`` and class sizes per hypothesis."""

    reference: Tensor
    model: Tensor
    weights: Optional[Tensor]
    base: dict
    scrub: list
    class_sizes: list
    engine: str
    metric: Metric

    def result(self, i: int, name: str, baseline_name: str, dataset_name: str, options: RunOptions) -> Result:
        seeds_ = list(self.scrub[i])
        return build_result(
            name, baseline_name, self.metric, dataset_name, self.engine, seeds_, self.reference, self.model,
            torch.stack([self.base[s] for s in seeds_]), torch.stack([self.scrub[i][s] for s in seeds_]),
            self.class_sizes[i], options.ci_level, options.n_boot, weights=self.weights,
        )


def compute_rows(
    hypotheses: Sequence[Hypothesis], base_h: Hypothesis, model, data: Dataset, options: RunOptions,
    seeds_: Sequence[int], reference: Tensor, features: FeatureCache, runner=None, only: Optional[dict] = None,
) -> Rows:
    """Plan and score: every hypothesis (or, with ``only``, hypothesis ``i`` for seeds ``only[i]``)
    and the baseline for each seed, and the model once, on the ``reference`` rows."""
    metric = options.metric
    if runner is None:
        runner = make_engine(options.engine, model, data, **options.engine_options())
    base_rows: dict = {}
    scrub_rows: list[dict] = [{} for _ in hypotheses]
    class_sizes: list[dict] = [{} for _ in hypotheses]
    for seed in _progress(list(seeds_), options.progress, f"scrubbing {len(hypotheses)} hypotheses"):
        chosen = [i for i in range(len(hypotheses)) if only is None or seed in only[i]]
        schedules = [plan(hypotheses[i], data, seed, reference=reference, features=features) for i in chosen]
        schedules.append(plan(base_h, data, seed, reference=reference, features=features))
        values = score_schedules(runner, schedules, metric, options.batch_size)
        base_rows[seed] = values[-1]
        for i, schedule, value in zip(chosen, schedules, values[:-1]):
            scrub_rows[i][seed] = value
            class_sizes[i] = schedule.class_sizes
    model_rows = score_clean(runner, reference, metric, options.batch_size)
    weights = metric.row_weights(data.rows(reference))
    return Rows(reference.cpu(), model_rows, None if weights is None else weights.cpu(), base_rows, scrub_rows,
                class_sizes, runner.name, metric)


def _progress(items, enabled: bool, label: str):
    """``items`` wrapped in a progress bar when ``enabled``."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=label, unit="seed")


def build_result(
    name: str,
    baseline_name: str,
    metric: Metric,
    data: Union[Dataset, str],
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
    weights: Optional[Tensor] = None,
) -> Result:
    """Assemble a `Result` from per-row values (shared by evaluate, compare and reports).

    ``weights`` (``[n]``) weight the rows in every mean (the metric's ``row_weights``). ``data`` (the
    dataset or its name) and ``metric`` (anything with ``name`` and ``lower_is_better``) only label
    the result, so a result can be rebuilt from stored values without them."""
    lr = loss_recovered(model_rows, base_rows, scrub_rows, level=ci_level, n_boot=n_boot, weights=weights)
    (mm, mm_se), (mb, mb_se), (ms, ms_se) = (mean_se(model_rows, weights), mean_se(base_rows, weights),
                                             mean_se(scrub_rows, weights))
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
        dataset=data if isinstance(data, str) else data.name,
        class_sizes=dict(class_sizes),
        warnings=tuple(warnings),
        rows=RowValues(reference=reference.cpu(), model=model_rows, base=base_rows, scrub=scrub_rows,
                       weights=None if weights is None else weights.cpu()),
    )
