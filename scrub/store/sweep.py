"""Big studies: a grid of scrubs written to a result store, in-process or on Ray, resumable; and
one large evaluation sharded by reference rows.

`sweep` runs hypotheses x models x datasets x seeds x metrics. Every cell (one hypothesis, one
seed) goes to the store as soon as its task finishes; a sweep started again computes only the
cells the store lacks. A task is a group of cells that share a clean pass (same model, dataset,
metric and rows): a chunk of hypotheses with their missing seeds.

`evaluate_sharded` splits one evaluation by reference rows. Sampling never depends on the split:
the driver plans every schedule for all rows (`scrub.plan`), and each shard scores a slice of
them (`Schedule.select`), so the per-row values, and with them LR, SE and CI, are those of the
single-process run with the same seeds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import attrs
import torch

from scrub.api import RUN_DEFAULTS, Rows, baseline_of, engine_name, make_engine, prepare, scrub_many
from scrub.data import Dataset
from scrub.engine.scoring import score_clean, score_schedules
from scrub.errors import OptionsError
from scrub.hypothesis import Hypothesis
from scrub.options import RunOptions, check_dataset, check_hypotheses, check_model, merge
from scrub.plan import FeatureCache, plan
from scrub.result import Result
from scrub.store.keys import model_fingerprint
from scrub.store.runs import StoredRun

__all__ = ["sweep", "SweepSummary", "evaluate_sharded", "EXECUTORS"]

EXECUTORS = ("local", "ray")


@attrs.frozen
class SweepSummary:
    """What a sweep did: cells in the grid, found in the store, computed now; tasks run; seconds."""

    total: int
    reused: int
    computed: int
    tasks: int
    seconds: float
    store: Path

    def __str__(self) -> str:
        return (f"sweep: {self.total} cells, {self.reused} found in {str(self.store)!r}, {self.computed} computed in "
                f"{self.tasks} tasks ({self.seconds:.1f} s)")


def _executor(value: Any) -> str:
    if value not in EXECUTORS:
        raise OptionsError(f"executor={value!r} is not allowed: executor must be one of {list(EXECUTORS)} "
                           f"('ray' needs pip install \"scrub[ray]\")")
    return value


def _named(value: Any, what: str, check: Callable[[Any, str, str], None]) -> dict:
    if isinstance(value, Mapping):
        found = dict(value)
    elif isinstance(value, (list, tuple)):
        found = {f"{what}{i}": v for i, v in enumerate(value)}
    else:
        found = {f"{what}0": value}
    if not found:
        raise OptionsError(f"sweep(): give at least one {what}")
    for name, v in found.items():
        check(v, "sweep()", f"{what}s[{name!r}]")
    return found


def _model_check(model: Any, where: str, name: str) -> None:
    check_model(model, f"{where} {name}")


def _task(model, data: Dataset, hyps: list, options: RunOptions) -> int:
    """One sweep task: scrub ``hyps`` (their cells missing from the store) and write the cells."""
    if torch.cuda.is_available():  # a task given a GPU computes there
        model = model.to("cuda")
    scrub_many(hyps, model, data, options)
    return len(hyps)


def sweep(
    hypotheses: Sequence[Hypothesis],
    models: Union[Mapping[str, Any], Sequence[Any], Any],
    datasets: Union[Mapping[str, Dataset], Sequence[Dataset], Dataset],
    seeds: Union[int, Sequence[int]] = 1,
    metrics: Optional[Sequence[Any]] = None,
    *,
    store,
    executor: str = "local",
    address: Optional[str] = None,
    baseline: Optional[Hypothesis] = None,
    n: Optional[int] = None,
    batch_size: Optional[int] = None,
    engine: Optional[str] = None,
    hypotheses_per_task: int = 8,
    max_retries: int = 3,
    progress: bool = True,
) -> SweepSummary:
    """Scrub every hypothesis on every model, dataset, seed and metric into ``store``.

    Args:
        hypotheses: the hypotheses (each must fit every model and dataset).
        models, datasets: ``{name: value}``, a list, or a single one.
        seeds: a count or a list of seeds (as in `scrub.evaluate`).
        metrics: metrics (names or `scrub.metrics.Metric`); None for the default (cross-entropy).
        store: the result store directory (required: it is where the results go).
        executor: ``"local"`` (this process) or ``"ray"`` (one Ray task per group of cells).
        address: the Ray cluster (``"auto"``, ``host:port``, ``ray://host:port``); None starts a
            local one (unless Ray is already initialised).
        baseline, n, batch_size, engine: as in `scrub.evaluate`.
        hypotheses_per_task: hypotheses per task (they share the task's clean pass).
        max_retries: retries of a task whose Ray worker died.
        progress: a progress bar of cells done / total, with the time left.

    Returns:
        A `SweepSummary`; read the results with `scrub.store.show.results` or ``scrub show``.

    Raises:
        ScrubError: any invalid argument, hypothesis, model, dataset or store, and an unreachable Ray
            address: all before any forward pass.
    """
    executor = _executor(executor)
    if not isinstance(hypotheses_per_task, int) or hypotheses_per_task < 1:
        raise OptionsError(f"hypotheses_per_task={hypotheses_per_task!r} must be an integer >= 1")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise OptionsError(f"max_retries={max_retries!r} must be an integer >= 0")
    if store is None:
        raise OptionsError("sweep(): store=None; a sweep writes its cells to a store: give a directory, e.g. store='runs/'")
    hyps = check_hypotheses(hypotheses, "sweep()")
    model_map = _named(models, "model", _model_check)
    data_map = _named(datasets, "dataset", check_dataset)
    grid = []
    for metric in list(metrics) if metrics else [None]:
        opts = RunOptions(seeds=seeds, metric=metric, baseline=baseline, n=n, batch_size=batch_size, engine=engine,
                          store=store)
        for mname, model in model_map.items():
            for dname, data in data_map.items():
                prepare(hyps, model, data, opts, f"sweep() on model {mname!r}, dataset {dname!r}")
                grid.append((mname, dname, opts))
    if executor == "ray":
        from scrub.store import on_ray

        on_ray.connect(address)
        device = on_ray.task_device()
    else:
        device = None
    fingerprints = {name: model_fingerprint(m) for name, m in model_map.items()}
    start = time.perf_counter()
    jobs, total, reused = [], 0, 0
    for mname, dname, opts in grid:
        model, data = model_map[mname], data_map[dname]
        n_rows = len(data) if opts.n is None else min(opts.n, len(data))
        run = StoredRun(opts.store, hyps, opts.baseline or baseline_of(hyps[0]), model, data, opts,
                        torch.arange(n_rows, device=data.device), FeatureCache(data), engine_name(opts.engine),
                        model_fp=fingerprints[mname], device=device)
        missing = run.missing()
        total += len(hyps) * len(opts.seeds)
        reused += len(hyps) * len(opts.seeds) - sum(len(s) for s in missing.values())
        todo = sorted(missing)
        for k in range(0, len(todo), hypotheses_per_task):
            chunk = todo[k : k + hypotheses_per_task]
            seeds_ = sorted({s for i in chunk for s in missing[i]}, key=list(opts.seeds).index)
            cells = sum(len(missing[i]) for i in chunk)
            jobs.append(((mname, dname, [hyps[i] for i in chunk], attrs.evolve(opts, seeds=seeds_)), cells))
    bar = _bar(progress, total, reused)
    computed = 0

    def done(cells: int, _value: Any) -> None:
        nonlocal computed
        computed += cells
        if bar is not None:
            bar.update(cells)

    try:
        if executor == "ray":
            names = list(model_map)
            shared = [model_map[name] for name in names]

            def remote_args(mname, dname, chunk, opts):
                return (names.index(mname), data_map[dname], chunk, opts)

            on_ray.run_tasks(_ray_task, [(remote_args(*args), cells) for args, cells in jobs],
                             max_retries=max_retries, on_done=done, shared=shared)
        else:
            for (mname, dname, chunk, opts), cells in jobs:
                done(cells, _task(model_map[mname], data_map[dname], chunk, opts))
    finally:
        if bar is not None:
            bar.close()
    return SweepSummary(total, reused, computed, len(jobs), time.perf_counter() - start, opts.store.path)


def _ray_task(*args):
    """A Ray task: ``(*models, model index, dataset, hypotheses, options)`` (models are shared)."""
    *models, index, data, chunk, opts = args
    return _task(models[index], data, chunk, opts)


def _bar(enabled: bool, total: int, done: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="sweep", unit="cell")


# ---- sharding -----------------------------------------------------------------------------------


def _shard_task(model, job: dict) -> tuple[dict, torch.Tensor]:
    """Score one shard: ``{seed: [values [m] per schedule]}`` and the model's values ``[m]``."""
    data, options = job["data"], job["options"]
    if torch.cuda.is_available():
        model = model.to("cuda")
    runner = make_engine(options.engine, model, data, **options.engine_options())
    out = {}
    for seed, schedules in job["schedules"].items():
        schedules = [attrs.evolve(s, dataset=data) for s in schedules]  # the engine's own dataset object
        out[seed] = score_schedules(runner, schedules, options.metric, options.batch_size)
    return out, score_clean(runner, job["reference"], options.metric, options.batch_size)


def sharded_rows(shards: int, executor: str = "local", address: Optional[str] = None) -> Callable[..., Rows]:
    """A replacement of `scrub.api.compute_rows` that scores the reference rows in ``shards``
    slices (in this process or as Ray tasks) and joins them: the same values, row for row."""

    def compute(hypotheses, base_h, model, data, options, seeds_, reference, features, runner=None, only=None):
        metric = options.metric
        scheds, class_sizes, chosen_by_seed = {}, [{} for _ in hypotheses], {}
        for seed in seeds_:
            chosen = [i for i in range(len(hypotheses)) if only is None or seed in only[i]]
            found = [plan(hypotheses[i], data, seed, reference=reference, features=features) for i in chosen]
            found.append(plan(base_h, data, seed, reference=reference, features=features))  # all rows planned
            for i, s in zip(chosen, found):
                class_sizes[i] = s.class_sizes
            scheds[seed], chosen_by_seed[seed] = found, chosen
        slices = [r for r in torch.tensor_split(torch.arange(len(reference)), shards) if len(r)]
        jobs = [{"data": data, "options": options, "reference": reference[r],
                 "schedules": {seed: [s.select(r) for s in found] for seed, found in scheds.items()}} for r in slices]
        parts: list = [None] * len(jobs)
        if executor == "ray":
            from scrub.store import on_ray

            on_ray.connect(address)
            on_ray.run_tasks(_shard_task, [((job,), k) for k, job in enumerate(jobs)], max_retries=3,
                             on_done=lambda k, value: parts.__setitem__(k, value), shared=[model])
        else:
            parts = [_shard_task(model, job) for job in jobs]
        base_rows, scrub_rows = {}, [{} for _ in hypotheses]
        for seed, chosen in chosen_by_seed.items():
            joined = [torch.cat([p[0][seed][j] for p in parts]) for j in range(len(chosen) + 1)]
            base_rows[seed] = joined[-1]
            for i, value in zip(chosen, joined[:-1]):
                scrub_rows[i][seed] = value
        model_rows = torch.cat([p[1] for p in parts])
        weights = metric.row_weights(data.rows(reference))
        return Rows(reference.cpu(), model_rows, None if weights is None else weights.cpu(), base_rows, scrub_rows,
                    class_sizes, engine_name(options.engine), metric)

    return compute


def evaluate_sharded(
    hypotheses: Sequence[Hypothesis],
    model,
    data: Dataset,
    *,
    shards: int = 2,
    executor: str = "local",
    address: Optional[str] = None,
    options: Optional[RunOptions] = None,
    **keywords,
) -> list[Result]:
    """`scrub.evaluate_many` with the reference rows split into ``shards`` slices, each scored on
    its own (in this process, or as Ray tasks with ``executor="ray"``), then joined. The results
    equal the unsharded ones: the same per-row values, so the same LR, SE and CI. Other options
    (keywords or ``options``) as in `scrub.evaluate_many`, ``store`` included."""
    executor = _executor(executor)
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise OptionsError(f"shards={shards!r} is not allowed: shards must be an integer >= 1")
    unknown = sorted(set(keywords) - set(RUN_DEFAULTS))
    if unknown:
        raise OptionsError(f"evaluate_sharded(): unknown options {unknown}; the options are those of "
                           f"scrub.evaluate: {sorted(RUN_DEFAULTS)}")
    opts = merge("evaluate_sharded()", options, RunOptions, {**RUN_DEFAULTS, **keywords}, RUN_DEFAULTS)
    hyps = check_hypotheses(hypotheses, "evaluate_sharded()")
    prepare(hyps, model, data, opts, "evaluate_sharded()")
    if executor == "ray":
        from scrub.store import on_ray

        on_ray.connect(address)  # an unreachable address is refused before any forward pass
    return scrub_many(hyps, model, data, opts, compute=sharded_rows(shards, executor, address))
