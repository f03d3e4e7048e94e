"""`RunOptions` and `ReportOptions`: every option of a scrub, validated once, at the door.

The public entry points (`scrub.evaluate`, `evaluate_many`, `report`, `compare`, `generality`
and the ``scrub`` command) keep their keyword arguments; each builds ONE options value from them
before it touches the model or the data, and passes that value down whole. Building it checks
every field: a wrong type or a value out of range is an `OptionsError` naming the argument, the
value and what is allowed. Pass ``options=RunOptions(...)`` to any entry point to reuse one.

The entry points also check that their model, dataset and hypothesis arguments are what they
claim to be (`check_model`, `check_dataset`, `check_hypothesis`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import attrs
import torch

from scrub.data import Dataset, Feature
from scrub.errors import OptionsError
from scrub.hypothesis import Hypothesis
from scrub.metrics import Metric, resolve
from scrub.model.sources import is_source_model
from scrub.store import Store, as_store

__all__ = [
    "RunOptions",
    "ReportOptions",
    "ENGINE_NAMES",
    "MIN_MEMORY_BUDGET_MB",
    "MIN_N_BOOT",
    "check_memory_budget",
    "check_model",
    "check_dataset",
    "check_hypothesis",
    "check_hypotheses",
    "merge",
]

ENGINE_NAMES = ("batched", "reference")
MIN_MEMORY_BUDGET_MB = 16.0  # below this the batched engine spends its time on chunk bookkeeping
MIN_N_BOOT = 10  # fewer bootstrap draws give an interval made of a handful of points
MAX_SEED = 2**63 - 1


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(name: str, value: Any, allowed: str) -> OptionsError:
    return OptionsError(f"{name}={_show(value)} ({type(value).__name__}) is not allowed: {name} must be {allowed}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _count(name: str, minimum: int, none_means: Optional[str] = None) -> Callable[[Any], Optional[int]]:
    """A converter: an integer >= minimum (or None, when ``none_means`` says what None is)."""
    allowed = f"an integer >= {minimum}" + (f", or None for {none_means}" if none_means else "")

    def convert(value: Any) -> Optional[int]:
        if value is None and none_means:
            return None
        if not _is_int(value) or int(value) < minimum:
            raise _bad(name, value, allowed)
        return int(value)

    return convert


def _seeds(value: Any) -> tuple[int, ...]:
    allowed = ("a positive count or a non-empty list of distinct integers in [0, 2**63) "
               "(seeds=2 means the seeds 0 and 1)")
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        value = value.item()
    if _is_int(value):
        if int(value) < 1:
            raise _bad("seeds", value, allowed)
        return tuple(range(int(value)))
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, range, torch.Tensor)):
        raise _bad("seeds", value, allowed)
    found = [s.item() if isinstance(s, torch.Tensor) and s.ndim == 0 else s for s in value]
    if not found or not all(_is_int(s) and 0 <= int(s) <= MAX_SEED for s in found):
        raise _bad("seeds", value, allowed)
    found = [int(s) for s in found]
    if len(set(found)) != len(found):
        raise _bad("seeds", value, allowed + " (a repeated seed would count the same draws twice)")
    return tuple(found)


def _metric(value: Any) -> Metric:
    return resolve(value)  # MetricError (a ScrubError) names the value and the choices


def _engine(value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or value not in ENGINE_NAMES:
        raise OptionsError(
            f"unknown engine {_show(value)}; choose one of {list(ENGINE_NAMES)}, or None for the default (batched)"
        )
    return value


def _batch_size(value: Any) -> Optional[int]:
    return _count("batch_size", 1, "all reference rows in one chunk")(value)


def check_memory_budget(value: Any) -> Optional[float]:
    """``memory_budget_mb`` as a float (``None`` stays ``None``: the default); an `OptionsError`
    naming the rule otherwise. The engine's option and the patching sweeps' argument."""
    allowed = (f"a number of megabytes >= {MIN_MEMORY_BUDGET_MB:g} (smaller budgets cut the work into "
               f"so many chunks that bookkeeping dominates), or None for the default (4096)")
    if value is None:
        return None
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) < MIN_MEMORY_BUDGET_MB:
        raise _bad("memory_budget_mb", value, allowed)
    return float(value)


def _ci_level(value: Any) -> float:
    if not _is_real(value) or not (0.0 < float(value) < 1.0):
        raise _bad("ci_level", value, "a number strictly between 0 and 1, e.g. 0.95 for a 95% interval")
    return float(value)


def _baseline(value: Any) -> Optional[Hypothesis]:
    if value is not None and not isinstance(value, Hypothesis):
        raise _bad("baseline", value, "a scrub.Hypothesis (whose metric counts as 0%), or None for the output alone")
    return value


def _device(value: Any) -> Optional[torch.device]:
    if value is None:
        return None
    allowed = "a torch device or its name (cpu, cuda, cuda:1, mps) available on this machine, or None for the model's"
    if not isinstance(value, (str, torch.device)):
        raise _bad("device", value, allowed)
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise _bad("device", value, allowed) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionsError(f"device={str(value)!r}: CUDA is not available on this machine; use device='cpu' or None")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise OptionsError(f"device={str(value)!r}: MPS is not available on this machine; use device='cpu' or None")
    return device


def _flag(name: str) -> Callable[[Any], bool]:
    def convert(value: Any) -> bool:
        if not isinstance(value, bool):
            raise _bad(name, value, "True or False")
        return value

    return convert


@attrs.frozen
class RunOptions:
    """How to scrub: rows, seeds, metric, engine, memory and the confidence interval.

    Every field is checked when the value is built (`OptionsError` otherwise); the value is frozen.

    Attributes:
        seeds: the sampling seeds; a count ``k`` becomes ``(0, ..., k-1)``.
        metric: a `scrub.metrics.Metric` (a name or a callable is resolved on the way in).
        n: the number of reference rows (the first ``n`` rows of the dataset; more than the
            dataset has means all of them); None for all rows.
        engine: ``"batched"``, ``"reference"`` or None (the default engine, batched).
        batch_size: reference rows per chunk (bounds memory); None for one chunk.
        memory_budget_mb: the batched engine's working-memory budget (>= 16); None for 4096.
        ci_level: the bootstrap interval's level, strictly between 0 and 1.
        n_boot: bootstrap resamples (>= 10).
        baseline: the hypothesis whose metric counts as 0% (None: the output alone).
        device: where the batched engine computes (None: the model's device).
        progress: show progress bars.
        store: a result store (a directory path or a `scrub.store.Store`; None for none): finished
            cells are read from it instead of computed, new ones written to it. A path is opened
            when the options are built, so an unwritable or incompatible store is refused before
            any forward pass.
    """

    seeds: tuple[int, ...] = attrs.field(default=(0,), converter=_seeds)
    metric: Metric = attrs.field(default=None, converter=_metric)
    n: Optional[int] = attrs.field(default=None, converter=_count("n", 1, "all rows"))
    engine: Optional[str] = attrs.field(default=None, converter=_engine)
    batch_size: Optional[int] = attrs.field(default=None, converter=_batch_size)
    memory_budget_mb: Optional[float] = attrs.field(default=None, converter=check_memory_budget)
    ci_level: float = attrs.field(default=0.95, converter=_ci_level)
    n_boot: int = attrs.field(default=1000, converter=_count("n_boot", MIN_N_BOOT))
    baseline: Optional[Hypothesis] = attrs.field(default=None, converter=_baseline)
    device: Optional[torch.device] = attrs.field(default=None, converter=_device)
    progress: bool = attrs.field(default=False, converter=_flag("progress"))
    store: Optional[Store] = attrs.field(default=None, converter=as_store)

    def __attrs_post_init__(self) -> None:
        if self.engine == "reference":
            extra = [name for name in ("memory_budget_mb", "device") if getattr(self, name) is not None]
            if extra:
                raise OptionsError(
                    f"{', '.join(extra)} apply to the batched engine; the reference engine runs one tree node "
                    f"at a time on the model's device (bound its memory with batch_size, move the model "
                    f"yourself, or use engine='batched')"
                )

    def engine_options(self) -> dict[str, Any]:
        """The keyword arguments of the batched engine that were set."""
        found = {"memory_budget_mb": self.memory_budget_mb, "device": self.device}
        return {k: v for k, v in found.items() if v is not None}


def _pairs(value: Any) -> Union[None, str, tuple[tuple[str, str], ...]]:
    allowed = "'downstream', None (no redundancy checks), or a list of (claim name, claim name) pairs"
    if value is None or value == "downstream":
        return value
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _bad("pairs", value, allowed)
    out = []
    for pair in value:
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2 or not all(isinstance(x, str) for x in pair):
            raise _bad("pairs", value, allowed + f"; {_show(pair)} is not a pair of names")
        out.append((pair[0], pair[1]))
    return tuple(out)


def _datasets(value: Any) -> Optional[dict[str, Dataset]]:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _bad("datasets", value, "a dict {name: scrub.Dataset} of other datasets, or None")
    for name, ds in value.items():
        if not isinstance(ds, Dataset):
            raise OptionsError(f"datasets[{name!r}] is a {type(ds).__name__}, not a scrub.Dataset; give {{name: Dataset}}")
    return dict(value)


def _subgraphs(value: Any) -> Optional[dict]:
    if value is not None and not isinstance(value, Mapping):
        raise _bad("subgraphs", value, "a dict {label: [claim names] or Hypothesis}, or None")
    return None if value is None else dict(value)


def _min_effect(value: Any) -> float:
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) < 0:
        raise _bad("min_effect", value, "a finite number >= 0 (loss recovered, e.g. 0.02)")
    return float(value)


def _optional_metric(value: Any) -> Optional[Metric]:
    return None if value is None else resolve(value)


def _by(value: Any) -> tuple:
    """``by=``: features to split the reference rows by (see `scrub.reporting.subpopulations`)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, Feature) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise _bad("by", value, "a list of scrub.Feature (one value per row), e.g. [Feature.extra('period')]")
    for f in items:
        if not isinstance(f, Feature) or f.exact:
            raise _bad("by", value, f"a list of scrub.Feature other than EXACT; {_show(f)} is not one")
    return tuple(items)


def _run_options(value: Any) -> RunOptions:
    if not isinstance(value, RunOptions):
        raise _bad("run", value, "a scrub.options.RunOptions")
    return value


@attrs.frozen
class ReportOptions:
    """The options of `scrub.report`: a `RunOptions` plus what the report derives.

    Attributes are those of `scrub.report` (see there); ``run`` holds the scrub's own options.
    """

    run: RunOptions = attrs.field(factory=lambda: RunOptions(seeds=2), converter=_run_options)
    leave_one_out: bool = attrs.field(default=True, converter=_flag("leave_one_out"))
    alone: bool = attrs.field(default=True, converter=_flag("alone"))
    paths: bool = attrs.field(default=True, converter=_flag("paths"))
    paths_limit: int = attrs.field(default=64, converter=_count("paths_limit", 1))
    subgraphs: Optional[dict] = attrs.field(default=None, converter=_subgraphs)
    pairs: Union[None, str, tuple[tuple[str, str], ...]] = attrs.field(default="downstream", converter=_pairs)
    max_pairs: int = attrs.field(default=20, converter=_count("max_pairs", 0))
    min_effect: float = attrs.field(default=0.02, converter=_min_effect)
    compensation: bool = attrs.field(default=True, converter=_flag("compensation"))
    compensation_metric: Optional[Metric] = attrs.field(default=None, converter=_optional_metric)
    datasets: Optional[dict] = attrs.field(default=None, converter=_datasets)
    by: tuple = attrs.field(default=(), converter=_by)


def merge(where: str, options: Any, cls: type, given: Mapping[str, Any], defaults: Mapping[str, Any]):
    """The options value of an entry point: ``options`` when given (then every keyword must be left
    at its default), else ``cls(**given)``."""
    if options is None:
        return cls(**given)
    if not isinstance(options, cls):
        raise OptionsError(f"{where}: options must be a scrub.options.{cls.__name__}, got {type(options).__name__}")
    clash = sorted(k for k, v in given.items() if k in defaults and not _same(v, defaults[k]))
    if clash:
        raise OptionsError(
            f"{where}: give either options=... or the keywords {clash}, not both "
            f"(use attrs.evolve(options, ...) to change a field)"
        )
    return options


def _same(value: Any, default: Any) -> bool:
    if value is default:
        return True
    if type(value) is not type(default):
        return False
    try:
        return bool(value == default)
    except Exception:  # noqa: BLE001 - values without a plain equality differ
        return False


def check_model(model: Any, where: str) -> None:
    """Refuse something that is not a model ``scrub`` runs: a TransformerLens model
    (``HookedTransformer``, ``TransformerBridge``) or a HuggingFace causal LM."""
    if not isinstance(model, torch.nn.Module) or not is_source_model(model):
        raise OptionsError(
            f"{where}: model must be a TransformerLens HookedTransformer or TransformerBridge, or a "
            f"HuggingFace causal LM (e.g. from scrub.load_model, scrub.zoo.load or "
            f"transformers.AutoModelForCausalLM), got {type(model).__module__}.{type(model).__name__}"
        )


def check_dataset(data: Any, where: str, name: str = "data") -> None:
    """Refuse something that is not a `scrub.Dataset`."""
    if not isinstance(data, Dataset):
        raise OptionsError(
            f"{where}: {name} must be a scrub.Dataset (tokens, targets, loss_mask), got {type(data).__name__}; "
            f"build one with scrub.Dataset(...) or a scrub.tasks function"
        )


def check_hypothesis(h: Any, where: str, name: str = "h") -> None:
    """Refuse something that is not a `scrub.Hypothesis`."""
    if not isinstance(h, Hypothesis):
        raise OptionsError(f"{where}: {name} must be a scrub.Hypothesis, got {type(h).__name__} ({_show(h)})")


def check_hypotheses(hypotheses: Any, where: str) -> list[Hypothesis]:
    """A non-empty list of `Hypothesis` (a single one is refused with a hint)."""
    if isinstance(hypotheses, Hypothesis):
        raise OptionsError(f"{where}: hypotheses must be a list of scrub.Hypothesis; wrap the single one as [h]")
    if isinstance(hypotheses, (str, bytes)) or not isinstance(hypotheses, (Sequence, tuple)):
        raise OptionsError(f"{where}: hypotheses must be a list of scrub.Hypothesis, got {type(hypotheses).__name__}")
    found = list(hypotheses)
    if not found:
        raise OptionsError(f"{where}: give at least one hypothesis")
    for i, h in enumerate(found):
        check_hypothesis(h, where, f"hypotheses[{i}]")
    return found
