"""The ``scrub`` command: run or compare the hypotheses of a hypothesis file.

Usage::

    scrub run FILE.py [--quick] [--json F] [--html F] [--seeds K] [--n N] [--device D]
                      [--metric M] [--no-progress]
    scrub compare FILE.py [--json F] [--html F] [--seeds K] [--n N] [--device D]
                          [--metric M] [--no-progress]
    scrub sweep FILE.py --store DIR [--ray [ADDRESS]] [--seeds K] [--n N] [--metric M] [--no-progress]
    scrub show DIR [--out FOLDER]
    scrub --version

``--store DIR`` (run, compare, sweep) keeps every scrubbed cell in a result store: cells found
there are read instead of computed. ``scrub sweep`` scrubs every hypothesis of the file on every
dataset (``datasets()``, else ``dataset()``) and seed into the store, in this process or on Ray
(``--ray`` starts a local cluster, ``--ray ADDRESS`` joins one); run it again to finish an
interrupted sweep. ``scrub show DIR`` rebuilds the results and comparisons from the store alone
(no model) and prints them; ``--out FOLDER`` also writes them as JSON and HTML.

A hypothesis file is a Python file that defines ``model()`` (a TransformerLens model),
``dataset()`` (a `scrub.Dataset`) or ``datasets()`` (a dict of them, by name), and
``HYPOTHESES`` (a list of `scrub.Hypothesis`) or ``hypotheses()`` (a function returning one).

``scrub run`` builds a full `scrub.report` for every hypothesis on the file's dataset (with
generality over ``datasets()`` when the file defines it) and prints each report; ``--quick``
only evaluates each hypothesis (`scrub.evaluate`) and prints one table. ``--json`` writes
``{"kind": "scrub.run", "reports": [...]}`` (with ``--quick``: ``{"kind": "scrub.run", "quick":
true, "results": [...]}``) and ``--html`` one self-contained page with every report. ``scrub compare`` compares all hypotheses of the file (`scrub.compare`: same rows,
same seeds, paired differences). Progress bars go to stderr (``--no-progress`` turns them off).

Every option is checked (and one `scrub.options.RunOptions` built from them) before the model is
loaded; the output paths are checked for writability before the first forward pass. Each output
file is written on its own: a failure to write one is reported (one line, exit code 2) and does
not stop the other from being written.

Exit codes:
    0  success
    1  an unexpected error: a bug, or an exception raised by the hypothesis file's own
       functions when called (model(), dataset(), ...); the traceback is printed
    2  a usage error or any ScrubError (missing or broken hypothesis file, invalid hypothesis,
       bad option, an output file that cannot be written): one line ``scrub: error: ...`` per
       problem on stderr, no traceback
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence

from scrub.errors import ScrubError

__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_INTERRUPTED"]

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


def build_parser() -> argparse.ArgumentParser:
    from scrub import __version__

    parser = _Parser(prog="scrub", description="Causal scrubbing of the hypotheses in a hypothesis file.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"scrub {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,compare,search,patch,sweep,show}", parser_class=_Parser)
    common = _Parser(add_help=False)
    common.add_argument("file", help="hypothesis file (defines model(), dataset()/datasets(), hypotheses())")
    common.add_argument("--json", metavar="F", help="write the results as JSON to F (atomically)")
    common.add_argument("--html", metavar="F", help="write a self-contained HTML report to F (atomically)")
    common.add_argument("--seeds", metavar="K", type=_positive(), default=2, help="sampling seeds (default 2)")
    common.add_argument("--n", metavar="N", type=_positive(), default=None,
                        help="use the first N rows as reference rows (default: all)")
    common.add_argument("--device", metavar="D", default=None, help="move the model to D (cpu, cuda, cuda:1, ...)")
    common.add_argument("--metric", metavar="M", choices=METRICS, default=None,
                        help=f"metric: {', '.join(METRICS)} (default: the file's METRIC, else cross_entropy)")
    common.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    common.add_argument("--store", metavar="DIR", default=None,
                        help="result store: read finished cells from DIR, write new ones there")
    run = sub.add_parser("run", parents=[common], help="report every hypothesis of FILE", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Report (subgraphs, serial redundancy, generality) every hypothesis of FILE.")
    run.add_argument("--quick", action="store_true", help="only evaluate each hypothesis (one table, no subgraphs)")
    sub.add_parser("compare", parents=[common], help="compare the hypotheses of FILE", epilog=EPILOG,
                   formatter_class=argparse.RawDescriptionHelpFormatter,
                   description="Compare every hypothesis of FILE on the same rows and seeds (paired differences).")
    _add_search_parser(sub, common)  # `scrub search`
    _add_store_commands(sub)
    _add_patch_command(sub)
    return parser


# ---- scrub patch (explore before hypothesising) -------------------------------------------------


def _add_patch_command(sub) -> None:
    patch = sub.add_parser("patch", help="patching sweeps on FILE's paired dataset; propose a hypothesis",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="Run activation patching in both directions, path patching among the "
                                       "components that matter, and propose a hypothesis (printed as Python "
                                       "code). FILE defines model() and a paired dataset() "
                                       "(scrub.patching.paired).")
    patch.add_argument("file", help="a file defining model() and a paired dataset()")
    patch.add_argument("--out", metavar="DIR", default=None,
                       help="write the sweeps (HTML, JSON), the paths and the proposal to DIR")
    patch.add_argument("--threshold", metavar="T", type=float, default=0.1,
                       help="normalised effect a component or edge must pass to be proposed (default 0.1)")
    patch.add_argument("--seeds", metavar="K", type=_positive(), default=1, help="resampling seeds (default 1)")
    patch.set_defaults(json=None, html=None, device=None)


def _patch(args) -> int:
    from scrub.hypfile import load_hypothesis_file
    from scrub.patching import explore

    if not 0.0 <= args.threshold < 1.0:
        raise UsageError(f"--threshold {args.threshold}: the normalised effect threshold must be in [0, 1)")
    out = _out_dir("--out", args.out)
    spec = load_hypothesis_file(args.file, need_hypotheses=False)
    model = spec.model()
    data = next(iter(spec.datasets().values()))
    found = explore(model, data, out, threshold=args.threshold, seeds=tuple(range(args.seeds)))
    for direction, result in found.sweeps.items():
        print(result)
        print()
    print("# proposed hypothesis (paste into a hypothesis file and scrub it):")
    print(found.code)
    for f in found.files:
        print(f"wrote {f}", file=sys.stderr)
    return 0


# ---- scrub sweep / scrub show (the result store) ------------------------------------------------


def _add_store_commands(sub) -> None:
    sweep = sub.add_parser("sweep", help="scrub every hypothesis x dataset x seed of FILE into a store",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="Scrub every hypothesis of FILE on every dataset and seed into the result "
                                       "store DIR (resumable: run again to compute only the missing cells).")
    sweep.add_argument("file", help="hypothesis file (defines model(), dataset()/datasets(), hypotheses())")
    sweep.add_argument("--store", metavar="DIR", required=True, help="the result store directory")
    sweep.add_argument("--ray", metavar="ADDRESS", nargs="?", const="local", default=None,
                       help="run the tasks on Ray: a local cluster, or the one at ADDRESS (host:port, auto)")
    sweep.add_argument("--seeds", metavar="K", type=_positive(), default=2, help="sampling seeds (default 2)")
    sweep.add_argument("--n", metavar="N", type=_positive(), default=None,
                       help="use the first N rows as reference rows (default: all)")
    sweep.add_argument("--metric", metavar="M", choices=METRICS, default=None,
                       help=f"metric: {', '.join(METRICS)} (default: the file's METRIC, else cross_entropy)")
    sweep.add_argument("--hypotheses-per-task", metavar="K", type=_positive(), default=8,
                       help="hypotheses per task, sharing its clean pass (default 8)")
    sweep.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    sweep.set_defaults(json=None, html=None, device=None)
    show = sub.add_parser("show", help="print (and write) the results and comparisons of a store",
                          epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                          description="Rebuild results and comparisons from the result store DIR alone (no model).")
    show.add_argument("store", metavar="DIR", help="the result store directory")
    show.add_argument("--out", metavar="FOLDER", default=None,
                      help="also write each comparison as JSON and HTML, and results.json, to FOLDER")
    show.set_defaults(json=None, html=None, device=None)


def _sweep(args) -> int:
    from scrub.options import RunOptions
    from scrub.store.sweep import sweep

    try:
        RunOptions(store=args.store)  # an unwritable or incompatible store, before the model loads
    except ScrubError as exc:
        raise UsageError(f"--store: {exc}") from exc
    spec, options, model, data, hyps = _load(args)
    _announce(spec, model, data, hyps)
    datasets = spec.datasets() if callable(getattr(spec.module, "datasets", None)) else {data.name: data}
    summary = sweep(hyps, {_model_name(model): model}, datasets, seeds=args.seeds, metrics=[options.metric],
                    store=args.store, n=args.n, executor="local" if args.ray is None else "ray",
                    address=None if args.ray in (None, "local") else args.ray,
                    hypotheses_per_task=args.hypotheses_per_task, progress=args.progress)
    print(summary)
    print(f"see the results: scrub show {args.store}")
    return EXIT_OK


def _show(args) -> int:
    from scrub.store.show import show

    out = None
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {args.out!r} is a file; name a folder for the JSON and HTML files")
    print(show(args.store, out), end="")
    if out is not None:
        print(f"written to {str(out)!r}")
    return EXIT_OK


def _store_reports(args, reports: list) -> None:
    """With ``--store``, keep the run's reports in the store too (``reports/<file>.json``), so
    ``scrub show`` rebuilds them without the model."""
    if getattr(args, "store", None) is None:
        return
    from scrub.reporting.files import write_json

    write_json(Path(args.store) / "reports" / f"{Path(args.file).stem}.json",
               {"kind": "scrub.run", "file": str(args.file), "reports": reports})


COMMANDS: dict = {}  # filled below: command name -> function(args) -> exit code


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


def _run_quick(args, options, model, data, hyps) -> int:
    from scrub.api import evaluate_many
    from scrub.reporting.build import _meta
    from scrub.reporting.files import write_json, write_text
    from scrub.reporting.html import render_run
    from scrub.reporting.terminal import format_table, num, pct

    # the same numbers as `scrub.evaluate` per hypothesis (same rows, seeds and baseline), sharing one engine
    results = evaluate_many(hyps, model, data, options=options)
    first = results[0]
    rows = [[r.hypothesis, pct(r.loss_recovered), pct(r.stderr, 2), f"[{pct(r.ci[0])}, {pct(r.ci[1])}]", num(r.m_scrub)]
            for r in results]
    print(format_table(
        ["hypothesis", "loss recovered", "SE", f"{int(round(100 * first.ci_level))}% CI", first.metric], rows,
        title=(f"{first.n_rows} reference rows of {first.dataset!r}, seeds {list(first.seeds)}; {first.metric}: "
               f"model {num(first.m_model)}, baseline ({first.baseline}) {num(first.m_base)}"),
    ))
    for r in results:
        for w in r.warnings:
            print(f"  warning ({r.hypothesis}): {w}")
    meta = _meta(model, data, first.seeds, options.metric, first, ci_level=first.ci_level, quick=True)
    data_out = {"kind": "scrub.run", "quick": True, "file": str(args.file), "results": [r.to_dict() for r in results],
                "meta": meta}
    side = {"kind": "scrub.comparison", "results": data_out["results"], "differences": [], "meta": meta,
            "title": "Hypotheses side by side (same rows and seeds)"}
    return _write_outputs([
        ("--json", args.json, lambda path: write_json(path, data_out)),
        ("--html", args.html, lambda path: write_text(path, render_run([], side, title=f"scrub run --quick: {Path(args.file).name}"))),
    ])


def _run(args) -> int:
    import scrub
    from scrub.options import ReportOptions
    from scrub.reporting.files import write_json, write_text
    from scrub.reporting.html import render_run

    spec, options, model, data, hyps = _load(args)
    _announce(spec, model, data, hyps)
    if args.quick:
        return _run_quick(args, options, model, data, hyps)
    others = spec.datasets() if callable(getattr(spec.module, "datasets", None)) else None
    report_options = ReportOptions(run=options, datasets=others)
    reports = []
    for i, h in enumerate(hyps):
        start = time.perf_counter()
        rep = scrub.report(h, model, data, options=report_options)
        reports.append(rep.to_dict())
        print(f"\n[{i + 1}/{len(hyps)}] ({time.perf_counter() - start:.1f} s)")
        print(rep, flush=True)
    _store_reports(args, reports)
    return _write_outputs([
        ("--json", args.json, lambda path: write_json(path, {"kind": "scrub.run", "file": str(args.file), "reports": reports})),
        ("--html", args.html, lambda path: write_text(path, render_run(reports, None, title=f"scrub run: {Path(args.file).name}"))),
    ])


def _compare(args) -> int:
    import scrub

    spec, options, model, data, hyps = _load(args)
    _announce(spec, model, data, hyps)
    cmp = scrub.compare(hyps, model, data, options=options)
    print(cmp)
    return _write_outputs([("--json", args.json, cmp.to_json), ("--html", args.html, cmp.to_html)])


# ---- scrub search (task J) --------------------------------------------------------------------


def _taus(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers (e.g. 0.01,0.02,0.05)") from None


def _add_search_parser(sub, common) -> None:
    search = sub.add_parser(
        "search", parents=[common], help="prune a hypothesis of FILE (or the whole model) while LR holds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="ACDC's walk with scrubbing semantics: from the output backwards, remove each edge (and coarsen "
                    "EXACT claims to the file's search_features(), if it defines one) whose removal drops loss "
                    "recovered by less than --tau.")
    search.add_argument("--tau", type=float, default=0.02, help="largest drop in LR a kept change may cause (default 0.02)")
    search.add_argument("--taus", type=_taus, default=None, metavar="T1,T2,...",
                        help="also search with these taus, for the size-vs-LR curve")
    search.add_argument("--start", default="full", metavar="NAME",
                        help="the hypothesis of FILE to start from, or 'full' (the whole model; default)")
    search.add_argument("--python", metavar="F", help="write the found hypothesis as Python code to F (atomically)")


def _search(args) -> int:
    from scrub.reporting.files import write_text
    from scrub.search import search

    args.python = _out_path("--python", args.python)
    spec, options, model, data, hyps = _load(args)
    if args.start == "full":
        start = "full"
    else:
        matches = [h for h in hyps if h.name == args.start]
        if not matches:
            raise UsageError(f"--start {args.start!r}: FILE has no hypothesis of that name; it has "
                             f"{[h.name for h in hyps]} (or use --start full)")
        start = matches[0]
    features = spec.module.search_features() if callable(getattr(spec.module, "search_features", None)) else None
    result = search(start, model, data, tau=args.tau, taus=args.taus, features=features, metric=options.metric,
                    seeds=options.seeds, n=options.n, device=options.device, progress=args.progress)
    print(result)
    return _write_outputs([
        ("--json", args.json, result.to_json),
        ("--html", args.html, result.to_html),
        ("--python", args.python, lambda path: write_text(path, result.to_python())),
    ])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``scrub`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(None if argv is None else list(argv))
        except SystemExit as exc:  # --help / --version
            return int(exc.code or 0)
        if args.command is None:
            raise UsageError("give a command: run, compare, search, patch, sweep or show (see 'scrub --help')")
        args.json = _out_path("--json", args.json)
        args.html = _out_path("--html", args.html)
        if args.json is not None and args.html is not None and args.json.absolute() == args.html.absolute():
            raise UsageError(f"--json and --html name the same file {str(args.json)!r}; give two paths")
        args.device = _device(args.device)
        code = COMMANDS[args.command](args)
    except ScrubError as exc:
        print(f"scrub: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("scrub: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - anything else is a bug or an error in the user's code
        traceback.print_exc()
        return EXIT_ERROR
    sys.stdout.flush()
    return code


COMMANDS.update(run=_run, compare=_compare, search=_search, sweep=_sweep, show=_show, patch=_patch)


if __name__ == "__main__":
    sys.exit(main())
