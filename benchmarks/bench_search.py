"""Search cost: `scrub.search` from `Hypothesis.full` of the whole 12-layer GPT-2-shaped random model,
in clean-forward units, batched (every candidate of a step in one engine call per seed) against the
same walk with one scrub per candidate (`batch_candidates=False`: the same decisions).

`full` records the model's shape, so each of its complete claims (whole upstream claimed EXACT)
treeifies as a leaf: the script prints, per depth, the tree size with and without that collapse
(`tree_size(h, collapse=False)`: every path its own node). The search then runs from `full` of all
12 layers; each step's line gives the receiver, the edges left, the collapsed tree size and the
hypotheses scored so far. The one-scrub-per-candidate walk is timed for ``--serial-seconds`` and
extrapolated to the whole search by hypotheses scored (say ``--serial-seconds 0`` to skip it;
``--serial-seconds -1`` runs it to the end and checks that it finds the same hypothesis).

    .venv/bin/python benchmarks/bench_search.py [--rows 16] [--tau 0.02] [--metric kl] [--budget 900] [--layers 12]
"""

from __future__ import annotations

import argparse
import re
import time

import common  # noqa: F401  (sets sys.path)
from common import add_model_args, fmt_s, make_dataset, make_model, setup

import torch

from scrub import Hypothesis
from scrub.hypothesis.full import tree_size
from scrub.search import search

LINE = re.compile(r"^(?P<claim>.+?): kept (?P<kept>\d+) of (?P<tried>\d+) changes; LR (?P<before>\S+) -> (?P<after>\S+); "
                  r"(?P<edges>\d+) edges, (?P<tree>\d+) tree nodes; (?P<scored>\d+) hypotheses scored$")


class _OutOfTime(Exception):
    pass


class Steps:
    """The search's progress lines, timed; stops the walk (an exception) once ``budget`` has passed."""

    def __init__(self, budget: float, echo: bool) -> None:
        self.budget, self.echo = budget, echo
        self.start = time.perf_counter()
        self.rows: list[dict] = []

    def __call__(self, line: str) -> None:
        now = time.perf_counter() - self.start
        match = LINE.match(line)
        row = dict(match.groupdict()) if match else {"claim": line}
        row["t"] = now
        self.rows.append(row)
        if self.echo:
            print(f"  {now:7.1f}s  {line}", flush=True)
        if 0 <= self.budget < now:
            raise _OutOfTime()

    @property
    def receivers(self) -> int:
        return len({r["claim"] for r in self.rows})

    @property
    def scored(self) -> int:
        return int(self.rows[-1]["scored"]) if self.rows and "scored" in self.rows[-1] else 0


def main() -> None:
    parser = add_model_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--rows", type=int, default=16, help="reference rows (default 16)")
    parser.add_argument("--layers", type=int, default=12, help="start from full over the last K layers (default "
                        "12: the whole model; fewer layers miss their upstream, so nothing collapses)")
    parser.add_argument("--tau", type=float, default=0.02)
    parser.add_argument("--metric", default="kl", help="kl (default: the random model's own outputs are the "
                        "target, so the model scores 0 and LR is well defined) or cross_entropy")
    parser.add_argument("--budget", type=float, default=900, help="stop the batched search after this many seconds")
    parser.add_argument("--serial-seconds", type=float, default=120,
                        help="time the one-scrub-per-candidate walk this long and extrapolate (0: skip; -1: run it out)")
    args = parser.parse_args()
    setup(args)
    model = make_model(args.d_model, args.vocab, args.n_ctx, args.seed, args.device)
    data = make_dataset(args.rows, args.vocab, args.n_ctx, args.seed)
    n_layers = model.cfg.n_layers
    for k in (1, 2, 3, 4, n_layers):
        t0 = time.perf_counter()
        h = Hypothesis.full(model, layers=range(n_layers - k, n_layers))
        built = time.perf_counter() - t0
        print(f"full over the last {k:>2} layer(s): {len(h.claims) - 1:>3} claims, {len(h.edges):>6,} edges, "
              f"{tree_size(h, collapse=False):>22,} tree nodes uncollapsed, {tree_size(h):>5,} collapsed "
              f"(built in {fmt_s(built)})")
    start = Hypothesis.full(model, layers=range(n_layers - args.layers, n_layers))

    with torch.no_grad():
        model(data.tokens)  # warm-up
        t0 = time.perf_counter()
        model(data.tokens)
        clean = time.perf_counter() - t0
    print(f"clean forward of {args.rows} rows: {fmt_s(clean)}")

    print(f"batched search from full over the last {args.layers} layers (tau {args.tau:g}, metric {args.metric}, {args.rows} rows, one seed; budget "
          f"{args.budget:g} s):")
    steps = Steps(args.budget, echo=True)
    t0 = time.perf_counter()
    try:
        fast = search(start, model, data, tau=args.tau, seeds=1, metric=args.metric, progress=steps)
    except _OutOfTime:
        spent = time.perf_counter() - t0
        print(f"stopped after {fmt_s(spent)} = {spent / clean:,.0f} clean forwards: {steps.receivers} receivers "
              f"processed, {steps.scored} hypotheses scored; last step: {steps.rows[-1]}")
        return
    batched = time.perf_counter() - t0
    per_hyp = batched / max(1, fast.scored)
    print(f"batched search: {fmt_s(batched)} = {batched / clean:,.0f} clean forwards; {fast.calls} engine calls, "
          f"{fast.scored} hypotheses scored ({fmt_s(per_hyp)} each); {len(start.edges):,} -> "
          f"{len(fast.hypothesis.edges)} edges, {len(start.claims) - 1} -> {len(fast.hypothesis.claims) - 1} claims; "
          f"LR {fast.start_result.loss_recovered:.1%} -> {fast.loss_recovered:.1%} ± {fast.stderr:.1%}; "
          f"largest tree kept after a step: {max((int(r['tree']) for r in steps.rows if 'tree' in r), default=1):,} "
          f"nodes")
    if args.serial_seconds == 0:
        return
    serial_steps = Steps(args.serial_seconds, echo=False)
    t0 = time.perf_counter()
    try:
        slow = search(start, model, data, tau=args.tau, seeds=1, metric=args.metric, batch_candidates=False,
                      progress=serial_steps)
    except _OutOfTime:
        slow = None
    serial = time.perf_counter() - t0
    if slow is not None:
        same = sorted(map(str, slow.hypothesis.edges)) == sorted(map(str, fast.hypothesis.edges))
        print(f"one scrub per candidate: {fmt_s(serial)} = {serial / clean:,.0f} clean forwards; {slow.calls} engine "
              f"calls; {serial / batched:.1f}x the batched search; same found hypothesis: {same}")
        return
    # the same walk (the same decisions), timed on its first steps: compare with the batched walk at
    # the same point (the stop comes at the first step line after the time is up, so that step is done)
    done = serial_steps.rows[-1] if serial_steps.rows else None
    if done is None or "scored" not in done:
        print(f"one scrub per candidate: not one step finished in {args.serial_seconds:g} s")
        return
    at = next(r for r in steps.rows if r.get("scored") == done["scored"])
    ratio = done["t"] / at["t"]
    print(f"one scrub per candidate (ESTIMATE: timed over its first {len(serial_steps.rows)} steps, "
          f"{done['scored']} hypotheses, {fmt_s(done['t'])}; the batched walk reached the same point in "
          f"{fmt_s(at['t'])}): {ratio:.2f}x slower, so ~{fmt_s(ratio * batched)} = "
          f"~{ratio * batched / clean:,.0f} clean forwards for the whole search")


if __name__ == "__main__":
    main()
