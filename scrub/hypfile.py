"""Load a hypothesis file: a Python file defining ``model()``, ``dataset()`` (or ``datasets()``)
and ``HYPOTHESES`` (a list) or ``hypotheses()`` (a function returning one)."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import attrs

from scrub.data import Dataset
from scrub.errors import ScrubError
from scrub.hypothesis import Hypothesis

__all__ = ["HypothesisFile", "load_hypothesis_file"]


class HypothesisFileError(ScrubError):
    """A hypothesis file is missing, fails to import, or lacks what `scrub run` needs.

    When importing the file raised, ``file_traceback`` holds the traceback from the file's own
    frames on (its lines and line numbers; the exception is also chained as ``__cause__``)."""

    def __init__(self, message: str, file_traceback: Optional[str] = None) -> None:
        super().__init__(message)
        self.file_traceback = file_traceback


def _import_error(path: Path, exc: BaseException) -> HypothesisFileError:
    """The error for an exception raised while importing ``path``: where in the file, and the
    traceback of the file's own frames (the import machinery's frames are left out)."""
    target = str(path.resolve())
    frames = traceback.extract_tb(exc.__traceback__)
    first = next((i for i, f in enumerate(frames) if str(Path(f.filename).resolve()) == target), None)
    kept = frames[first:] if first is not None else frames
    where = ""
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        text = (exc.text or "").strip()
        where = f" at line {exc.lineno}" + (f" ({text!r})" if text else "")
    else:
        own = [f for f in kept if str(Path(f.filename).resolve()) == target]
        if own:
            last = own[-1]
            where = f" at line {last.lineno}" + (f" ({last.line.strip()!r})" if last.line else "")
            if kept[-1] is not last:
                where += f", in {Path(kept[-1].filename).name} line {kept[-1].lineno}"
    text = "".join(traceback.format_list(kept)) + "".join(traceback.format_exception_only(type(exc), exc))
    return HypothesisFileError(
        f"{path}{where}: importing the file raised {type(exc).__name__}: {exc}",
        file_traceback="Traceback (most recent call last):\n" + text,
    )


@attrs.frozen(eq=False)
class HypothesisFile:
    """What a hypothesis file provides."""

    path: Path
    model: Callable[[], Any]
    datasets: Callable[[], dict[str, Dataset]]
    hypotheses: Callable[[], list[Hypothesis]]
    module: Any = attrs.field(repr=False)

    def dataset(self) -> Dataset:
        """The file's main dataset (``dataset()``, else the first of ``datasets()``)."""
        if hasattr(self.module, "dataset"):
            return _check_dataset(self.module.dataset(), self.path, "dataset()")
        return next(iter(self.datasets().values()))


def _check_dataset(value: Any, path: Path, where: str) -> Dataset:
    if not isinstance(value, Dataset):
        raise HypothesisFileError(f"{path}: {where} must return a scrub.Dataset, got {type(value).__name__}")
    return value


def load_hypothesis_file(path: str | Path, *, need_hypotheses: bool = True) -> HypothesisFile:
    """Import ``path`` and check that it defines what `scrub run` needs.

    Raises:
        HypothesisFileError: the file is missing, raises on import, or lacks ``model()``,
            ``dataset()``/``datasets()`` or (unless ``need_hypotheses`` is false, as for
            `scrub patch`) ``HYPOTHESES``/``hypotheses()``.
    """
    path = Path(path)
    if not path.is_file():
        raise HypothesisFileError(f"hypothesis file {str(path)!r} does not exist")
    name = f"scrub_hypfile_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise HypothesisFileError(f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ScrubError:
        raise
    except Exception as exc:  # the user's code: a file error that keeps where it happened
        raise _import_error(path, exc) from exc
    if not callable(getattr(module, "model", None)):
        raise HypothesisFileError(f"{path}: define a function model() returning the model to scrub")
    if not (callable(getattr(module, "dataset", None)) or callable(getattr(module, "datasets", None))):
        raise HypothesisFileError(f"{path}: define dataset() (a scrub.Dataset) or datasets() (a dict of them)")
    if need_hypotheses and not (hasattr(module, "HYPOTHESES") or callable(getattr(module, "hypotheses", None))):
        raise HypothesisFileError(f"{path}: define HYPOTHESES (a list of Hypothesis) or hypotheses()")

    def hypotheses() -> list[Hypothesis]:
        found = module.hypotheses() if callable(getattr(module, "hypotheses", None)) else module.HYPOTHESES
        found = list(found)
        if not found or not all(isinstance(h, Hypothesis) for h in found):
            raise HypothesisFileError(f"{path}: HYPOTHESES / hypotheses() must be a non-empty list of scrub.Hypothesis")
        return found

    def datasets() -> dict[str, Dataset]:
        if callable(getattr(module, "datasets", None)):
            found = dict(module.datasets())
            if not found:
                raise HypothesisFileError(f"{path}: datasets() returned no datasets")
            return {k: _check_dataset(v, path, f"datasets()[{k!r}]") for k, v in found.items()}
        data = _check_dataset(module.dataset(), path, "dataset()")
        return {data.name: data}

    return HypothesisFile(path=path, model=module.model, datasets=datasets, hypotheses=hypotheses, module=module)
