"""Where a report's time goes: planning, class-size statistics, model work, everything else.

Runs ``scrub.report(h, model, data, n=ROWS, seeds=SEEDS)`` of one hypothesis of a hypothesis
file on its zoo model and dataset (default: the naive induction hypothesis, 17 claims, on
``induction-2l`` and ``scrub.tasks.induction(n=2048)``, 128 rows, 2 seeds, as in the demo), with
timers around the functions of each part, and prints the split:

* plan: `PLAN.plan` (sampling every schedule of every variant and seed), without the
  statistics below;
* statistics: `FeatureCache.class_sizes` (min / median / max equivalence-class size per
  feature, for the small-class warning);
* model: the engine (`BatchedEngine.run_many`, `BatchedEngine.clean_logits`) and the forward
  passes of the compensation check (`ModelView.clean_pass`, `ModelView.forward`,
  `scrub.reporting.ablation.ablated_logits`);
* other: the rest (metrics, bootstrap intervals, variants, findings).

Each part's time is exclusive (a timed function called inside another counts once, in the
inner part). The report runs once as a warm-up, then ``--repeats`` times; the split of the median
run is printed. For comparison within the same run, the statistics are also computed the way the
planner did before (per schedule, for each feature a per-entry class-size table and its median),
on the same features and as many times as the report asked for them.

    .venv/bin/python benchmarks/bench_report_split.py [--file hypotheses/induction.py]
        [--hypothesis naive] [--rows 128] [--seeds 2] [--data-rows 2048]
"""

from __future__ import annotations

import argparse
import functools
import statistics as stats
import sys
import time

import common  # noqa: F401  (sets sys.path)
import torch

import scrub
import scrub.api
import scrub.reporting.build
from scrub.engine.batched import BatchedEngine
from scrub.hypfile import load_hypothesis_file
from scrub.model import ModelView

PARTS = ("plan", "statistics", "model", "other")
PLAN = sys.modules["scrub.plan"]  # the module (``scrub.plan`` is the function)


class Split:
    """Exclusive time per part: a stack of open timers, each charged its time minus its children's."""

    def __init__(self) -> None:
        self.total = {p: 0.0 for p in PARTS}
        self.calls = {p: 0 for p in PARTS}
        self._stack: list[list] = []  # [part, start, time of timed calls inside]

    def wrap(self, part: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self._stack.append([part, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                _, start, inner = self._stack.pop()
                elapsed = time.perf_counter() - start
                self.total[part] += elapsed - inner
                self.calls[part] += 1
                if self._stack:
                    self._stack[-1][2] += elapsed

        return timed


def instrument(split: Split, used_features: list) -> None:
    """Wrap the timed functions where the report's code looks them up."""
    plan = split.wrap("plan", PLAN.plan)
    scrub.api.plan = plan
    original_sizes = PLAN.FeatureCache.class_sizes

    def class_sizes(self, used=None):
        used_features.append((self, None if used is None else list(used)))
        return original_sizes(self, used)

    PLAN.FeatureCache.class_sizes = split.wrap("statistics", class_sizes)
    for name in ("run_many", "clean_logits"):
        setattr(BatchedEngine, name, split.wrap("model", getattr(BatchedEngine, name)))
    for name in ("clean_pass", "forward"):
        setattr(ModelView, name, split.wrap("model", getattr(ModelView, name)))
    scrub.reporting.build.ablated_logits = split.wrap("model", scrub.reporting.build.ablated_logits)


def old_statistics(calls: list) -> float:
    """Seconds the planner's former statistics take on the same requests: for every schedule,
    each used feature's per-entry class-size table, then its min, median and max."""
    start = time.perf_counter()
    for cache, used in calls:
        keys = None if used is None else {id(f) for f in used}
        for key, values in cache._values.items():
            if values.feature.exact or (keys is not None and key not in keys):
                continue
            sizes = values.class_sizes().flatten().float()
            (int(sizes.min()), float(sizes.median()), int(sizes.max()))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default=str(common._ROOT / "hypotheses" / "induction.py"))
    parser.add_argument("--hypothesis", default="naive", help="a function of the file returning a Hypothesis")
    parser.add_argument("--rows", type=int, default=128, help="reference rows (n)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--data-rows", type=int, default=2048, help="rows of the file's dataset(n=...)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(common.machine_banner("cpu"))

    spec = load_hypothesis_file(args.file)
    h = getattr(spec.module, args.hypothesis)()
    model, data = spec.model(), spec.module.dataset(n=args.data_rows)
    print(f"hypothesis {h.name!r}: {len(h.claims)} claims (the output and {len(h.claims) - 1} below it) | dataset {data!r} | n={args.rows}, seeds={args.seeds}")

    run = lambda: scrub.report(h, model, data, n=args.rows, seeds=args.seeds)  # noqa: E731
    run()  # warm-up (zoo weights, features, allocator)
    split = Split()
    requests: list = []
    instrument(split, requests)
    runs = []
    for _ in range(args.repeats):
        split.total = {p: 0.0 for p in PARTS}
        split.calls = {p: 0 for p in PARTS}
        requests.clear()
        start = time.perf_counter()
        report = run()
        wall = time.perf_counter() - start
        timed = sum(split.total[p] for p in PARTS if p != "other")
        runs.append((wall, dict(split.total, other=wall - timed), dict(split.calls), list(requests)))
    wall, parts, calls, requests = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    n_variants = 1 + len(report.subgraphs) + len(report.joint)

    print(f"\nreport: {n_variants} hypotheses (the full one, subgraph and pair variants) + the baseline, "
          f"{args.seeds} seeds -> {calls['plan']} schedules; median of {args.repeats} runs "
          f"(wall times: {', '.join(common.fmt_s(r[0]) for r in runs)})")
    print(f"\n{'part':<12}{'time':>10}{'share':>9}{'calls':>8}")
    for p in PARTS:
        print(f"{p:<12}{common.fmt_s(parts[p]):>10}{parts[p] / wall:>9.1%}{calls[p] if p != 'other' else '':>8}")
    print(f"{'total':<12}{common.fmt_s(wall):>10}{1:>9.1%}")
    bookkeeping = parts["plan"] + parts["statistics"]
    print(f"\nplanning + statistics: {bookkeeping / wall:.1%} of the report   goal < 10%: "
          f"{common.verdict(bookkeeping < 0.1 * wall)}")
    before = stats.median(old_statistics(requests) for _ in range(3))
    print(f"statistics the former way (per schedule, per-entry table and median) on the same "
          f"{len(requests)} requests: {common.fmt_s(before)} ({before / max(parts['statistics'], 1e-9):.0f}x "
          f"the {common.fmt_s(parts['statistics'])} now; {before / wall:.0%} of this report's time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
