"""scrub: causal scrubbing for TransformerLens models.

Write a hypothesis as a graph of claims, and `scrub.evaluate` tells you how much of the model's
performance it explains (loss recovered). See README.md for a tutorial and DESIGN.md for the method.
"""

from scrub import metrics, options
from scrub.api import evaluate
from scrub.components import MLP, Embed, Head, Output, PosEmbed
from scrub.data import EXACT, Dataset, Feature
from scrub.errors import (
    ComponentError,
    DatasetError,
    FeatureError,
    HypothesisError,
    MetricError,
    OptionsError,
    ReportError,
    ScheduleError,
    ScrubError,
    UnsupportedModelError,
)
from scrub.hypothesis import Claim, Hypothesis
from scrub.options import ReportOptions, RunOptions
from scrub.plan import Schedule, plan
from scrub.result import Result
from scrub.reporting.build import compare, generality, report
from scrub.api import evaluate_many
from scrub.model.loaders import from_hf, load_model
from scrub.store.sweep import evaluate_sharded, sweep
from scrub import search  # the package is callable: scrub.search(h, model, data, tau=...)
from scrub.search import worst_subpopulation

__version__ = "0.1.0"


def __getattr__(name: str):
    # tasks and zoo import TransformerLens / training code: load them on first use
    if name in ("tasks", "zoo"):
        import importlib

        return importlib.import_module(f"scrub.{name}")
    raise AttributeError(f"module 'scrub' has no attribute {name!r}")


__all__ = [
    "Hypothesis",
    "Claim",
    "Feature",
    "EXACT",
    "Dataset",
    "Head",
    "MLP",
    "Embed",
    "PosEmbed",
    "Output",
    "evaluate",
    "evaluate_many",
    "load_model",
    "from_hf",
    "report",
    "compare",
    "generality",
    "sweep",
    "evaluate_sharded",
    "search",
    "worst_subpopulation",
    "plan",
    "Schedule",
    "Result",
    "metrics",
    "options",
    "RunOptions",
    "ReportOptions",
    "tasks",
    "zoo",
    "ScrubError",
    "HypothesisError",
    "ComponentError",
    "FeatureError",
    "DatasetError",
    "UnsupportedModelError",
    "ScheduleError",
    "MetricError",
    "ReportError",
    "OptionsError",
    "__version__",
]

# exploration before hypotheses (scrub.patching): sweeps, and a sweep -> a Hypothesis
from scrub import patching  # noqa: E402
from scrub.patching import PatchingResult, activation_patch, attribution_patch, path_patch, propose  # noqa: E402

__all__ += ["patching", "activation_patch", "path_patch", "attribution_patch", "propose", "PatchingResult"]
