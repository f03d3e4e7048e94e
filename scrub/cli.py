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
import sys
import time
import traceback
from pathlib import Path
from typing import Optional, Sequence

from scrub.errors import ScrubError
from scrub.cli_common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    METRICS,
    EPILOG,
    UsageError,
    _Parser,
    _positive,
    _out_path,
    _write_outputs,
    _load,
    _device,
    _announce,
)
from scrub.cli_studies import (
    _add_patch_command,
    _add_search_parser,
    _add_store_commands,
    _patch,
    _search,
    _show,
    _store_reports,
    _sweep,
)

__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_INTERRUPTED"]


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


COMMANDS: dict = {}  # filled below: command name -> function(args) -> exit code


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
