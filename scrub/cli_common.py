"""What every `scrub` subcommand shares: the metric names, the exit-code epilog, the usage errors,
the parser class, output-path checks, reading a hypothesis file and its options."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from scrub.errors import ScrubError

#: exit codes of the `scrub` command (see EPILOG)
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

METRICS = ("cross_entropy", "cross_entropy_tokens", "accuracy", "kl", "logit_diff", "target_logit", "squared_error")

EPILOG = """exit codes:
  0    success
  1    unexpected error: a bug, or an exception raised by the file's own functions
       (the traceback is printed)
  2    usage error, or a ScrubError: bad hypothesis file, invalid hypothesis, bad option,
       an output file that cannot be written (one line 'scrub: error: ...' on stderr per
       problem, no traceback)
  130  interrupted

examples:
  scrub run hypotheses/induction.py --html report.html
  scrub run hypotheses/induction.py --quick --n 256 --seeds 1
  scrub compare hypotheses/induction.py --json comparison.json
  scrub sweep hypotheses/induction.py --store runs/ --seeds 3 --ray
  scrub show runs/ --out runs-report/
"""


class UsageError(ScrubError):
    """A command-line option is invalid."""


class InvalidHypothesis(ScrubError):
    """A hypothesis of the file does not fit the model or the dataset."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2 (argparse prints usage + error)
        raise UsageError(f"{message} (see 'scrub --help')")


def _positive():
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
        return value

    return parse



def _out_dir(option: str, value: Optional[str]) -> Optional[Path]:
    """Refuse an output folder that cannot be written (an existing file, or no writable folder on
    its way) before any long computation; missing folders are created when writing."""
    if value is None:
        return None
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {value!r} is a file; give a folder to write into")
    existing = path if path.exists() else next((p for p in path.absolute().parents if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {value!r}: the folder {str(existing)!r} is not writable; choose another path")
    return path


def _out_path(option: str, value: Optional[str]) -> Optional[Path]:
    """Refuse an output path that cannot be written before any long computation.

    The path must not be a directory; the nearest folder on its way that exists must be a
    writable directory (missing folders below it are created when writing, as before); an
    existing file must be writable."""
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        raise UsageError(f"{option} {value!r} is a directory; give a file name")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None:
        raise UsageError(f"{option} {value!r}: no folder on its way exists; give a path on an existing drive")
    if not parent.is_dir():
        raise UsageError(f"{option} {value!r}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {value!r}: the folder {str(parent)!r} is not writable; choose another path")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {value!r}: the file exists and is not writable; choose another path")
    return path


def _write_outputs(writers: Sequence[tuple[str, Optional[Path], Callable[[Path], object]]]) -> int:
    """Write every requested output file on its own; one line on stderr per failure.

    Returns the exit code: 0 when every file was written, 2 when any failed."""
    code = EXIT_OK
    for option, path, write in writers:
        if path is None:
            continue
        try:
            write(path)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            print(f"scrub: error: cannot write {option} {str(path)!r}: {reason}; the other outputs were still "
                  f"written", file=sys.stderr)
            code = EXIT_USAGE
    return code


def _options(args):
    """The one `RunOptions` of this command, from its arguments (checked before the model loads)."""
    from scrub.options import RunOptions

    try:
        return RunOptions(seeds=args.seeds, n=args.n, metric=args.metric, progress=args.progress, device=args.device,
                          store=getattr(args, "store", None))
    except ScrubError as exc:
        raise UsageError(str(exc)) from exc


def _check_names(spec, hyps) -> None:
    names = [h.name for h in hyps]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidHypothesis(
            f"{spec.path}: hypothesis names must be distinct to label the results; {repeated} appear more than "
            f"once (rename them, e.g. Hypothesis('naive, v2'))"
        )


def _load(args):
    """The file, its options, its model (moved to ``--device``), its main dataset and its
    (validated, distinctly named) hypotheses."""
    from scrub.hypfile import load_hypothesis_file

    spec = load_hypothesis_file(args.file)
    if args.metric is None:  # the file may name its metric (module-level METRIC = "logit_diff")
        args.metric = getattr(spec.module, "METRIC", None) or "cross_entropy"
        if args.metric not in METRICS:
            raise InvalidHypothesis(f"{spec.path}: METRIC = {args.metric!r} is not one of {', '.join(METRICS)}")
    options = _options(args)
    model = spec.model()
    if args.device is not None:
        try:
            try:  # TransformerLens prints "Moving model to device" unless told not to
                moved = model.to(args.device, print_details=False)
            except TypeError:
                moved = model.to(args.device)
            model = moved if moved is not None else model
        except (RuntimeError, AssertionError) as exc:
            raise UsageError(f"--device {str(args.device)!r}: cannot move the model there: {exc}") from None
    data = spec.dataset()
    hyps = spec.hypotheses()
    _check_names(spec, hyps)
    for h in hyps:  # every hypothesis checked before the first forward pass
        try:
            h.validate(model, n_pos=data.n_pos)
        except ScrubError as exc:
            raise InvalidHypothesis(f"{spec.path}: hypothesis {h.name!r}: {exc}") from exc
    return spec, options, model, data, hyps


def _device(value: Optional[str]):
    """``--device`` checked before anything is loaded."""
    if value is None:
        return None
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {value!r} is not a device; write e.g. cpu, cuda, cuda:1 or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {value!r}: CUDA is not available on this machine")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"--device {value!r}: MPS is not available on this machine")
    return device


def _announce(spec, model, data, hyps) -> None:
    count = f"{len(hyps)} hypothes{'is' if len(hyps) == 1 else 'es'}"
    print(f"{spec.path}: {count}; model {_model_name(model)}; dataset {data!r}", flush=True)


def _model_name(model) -> str:
    return getattr(getattr(model, "cfg", None), "model_name", type(model).__name__)
