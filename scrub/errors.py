"""The one exception tree of `scrub`.

Every error names the rule that was broken, the offending item and the fix. Catch
`ScrubError` to handle anything `scrub` raises on purpose.
"""

from __future__ import annotations


class ScrubError(Exception):
    """Base class of every error `scrub` raises on purpose."""


class HypothesisError(ScrubError, ValueError):
    """A hypothesis graph breaks a rule (cycle, bad port, claim that feeds nothing, ...)."""


class ComponentError(HypothesisError):
    """A component or port does not exist in the model the hypothesis is checked against."""


class FeatureError(ScrubError, ValueError):
    """A feature returned the wrong shape or type, or is not deterministic."""


class DatasetError(ScrubError, ValueError):
    """A dataset is empty, malformed or does not fit the model (vocabulary, context length)."""


class UnsupportedModelError(ScrubError, NotImplementedError):
    """The model uses an architecture setting `scrub` does not support yet."""


class CheckpointError(ScrubError, ValueError):
    """A model to load is missing or incomplete (no config or weights, a tokenizer that does not fit)."""


class ScheduleError(ScrubError, ValueError):
    """A schedule does not fit the model or dataset it is executed on."""


class MetricError(ScrubError, ValueError):
    """A metric returned the wrong shape, or the model produced NaN logits."""


class ReportError(ScrubError, ValueError):
    """A report request is malformed (unknown subgraph claim, pair, dataset name, ...)."""


class OptionsError(ScrubError, ValueError):
    """An argument of a public entry point has the wrong type or is out of range (see `scrub.options`)."""


__all__ = [
    "ScrubError",
    "HypothesisError",
    "ComponentError",
    "FeatureError",
    "DatasetError",
    "UnsupportedModelError",
    "CheckpointError",
    "ScheduleError",
    "MetricError",
    "ReportError",
    "OptionsError",
]
