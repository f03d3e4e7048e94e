"""The `scrub` subcommands beyond one file's hypotheses: `patch` (explore before hypothesising),
`search` (the smallest hypothesis that holds), `sweep` and `show` (the result store)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scrub.errors import ScrubError
from scrub.cli_common import (
    EXIT_OK,
    METRICS,
    EPILOG,
    UsageError,
    _positive,
    _out_dir,
    _out_path,
    _write_outputs,
    _load,
    _announce,
    _model_name,
)


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
