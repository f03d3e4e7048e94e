"""How the time of one batched scrub grows with the number of rows and with the number of claims.

Table 1: one scrub of the 20-claim hypothesis on datasets of ``--rows`` rows (default
64, 256, 1024, 4096; every row is a reference row and the pool), with one clean forward
(``ModelView.forward``) of the same rows and the ratio of the two.
Table 2: one scrub of hypotheses of ``--claims`` claims (default 1, 5, 10, 20, 40; the first N
claims of benchmarks/common.py) on ``--fixed-rows`` rows (default 256), with the same ratio.

The scrub asks for the logits where ``scrub.evaluate`` does: at the positions cross-entropy
reads (the last one), so the engine computes each node only where those logits depend on it.
The clean forward is ``ModelView.forward`` in batches of ``--clean-batch`` rows (default 256;
one call on 4096 rows is memory-bound and several times slower per row). The ratio (scrub /
clean forward, both measured in this run) is the figure to read; absolute times on a shared
machine are noisy. A point whose first run takes under 2 s is timed again ``--repeats`` times
(default 3) and the median is reported; slower points are timed once (to keep the script near
three minutes on a 2-core CPU).

    .venv/bin/python benchmarks/bench_scaling.py [--rows 64,256,1024,4096] [--claims 1,5,10,20,40]
"""

from __future__ import annotations

import argparse
import sys
import time

import common  # noqa: F401  (sets sys.path)
import torch

import scrub
from scrub.engine.batched import BatchedEngine
from scrub.model import ModelView
from scrub.plan import FeatureCache


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


_CLEAN_ROWS = [0]


def _count_clean_rows() -> None:
    """Wrap ModelView.clean_pass (in this process only) to count the rows the engine's clean passes cover."""
    original = ModelView.clean_pass

    def counting(self, tokens, **options):
        _CLEAN_ROWS[0] += int(tokens.shape[0])
        return original(self, tokens, **options)

    ModelView.clean_pass = counting


def main() -> None:
    parser = common.add_model_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--rows", type=_ints, default=[64, 256, 1024, 4096], help="comma-separated row counts")
    parser.add_argument("--claims", type=_ints, default=[1, 5, 10, 20, 40], help="comma-separated claim counts")
    parser.add_argument("--fixed-claims", type=int, default=20, help="claims of the hypothesis in table 1")
    parser.add_argument("--fixed-rows", type=int, default=256, help="rows of table 2")
    parser.add_argument("--memory-budget-mb", type=float, default=1024)
    parser.add_argument("--clean-batch", type=int, default=256, help="rows per ModelView.forward call of the clean forward")
    args = parser.parse_args()
    common.setup(args)
    t_start = time.perf_counter()

    _count_clean_rows()
    model = common.make_model(args.d_model, args.vocab, args.n_ctx, args.seed, args.device)
    r = args.repeats

    def measure(n_rows: int, n_claims: int, data_cache: dict) -> dict:
        if n_rows not in data_cache:
            data_cache[n_rows] = common.make_dataset(n_rows, args.vocab, args.n_ctx, args.seed).to(args.device)
        data = data_cache[n_rows]
        h = common.make_hypothesis(n_claims)
        t0 = time.perf_counter()
        schedule = scrub.plan(h, data, args.seed, model=model, features=FeatureCache(data))
        t_plan = time.perf_counter() - t0
        engine = BatchedEngine(model, data, memory_budget_mb=args.memory_budget_mb, device=args.device)
        tokens, step = data.tokens, args.clean_batch

        def clean() -> None:
            for i in range(0, len(tokens), step):
                engine.view.forward(tokens[i : i + step])

        with torch.no_grad():
            t_clean, _ = common.timed_adaptive(clean, r)
            _CLEAN_ROWS[0] = 0
            scored = scrub.metrics.cross_entropy().positions(data)  # what scrub.evaluate asks for
            t_scrub, runs = common.timed_adaptive(lambda: engine.run(schedule, positions=scored), r)
            clean_rows = _CLEAN_ROWS[0] // (1 if runs == 1 else 1 + runs)  # per scrub
        return dict(
            rows=n_rows,
            claims=n_claims,
            nodes=sum(1 for _ in schedule.nodes()),
            chunk=engine.chunk_size([schedule]),
            plan=t_plan,
            clean=t_clean,
            scrub=t_scrub,
            runs=runs,
            clean_rows=clean_rows,
        )

    datasets: dict = {}
    # one warm-up on the smallest case, not reported
    measure(min(args.rows + [args.fixed_rows]), min(args.claims + [args.fixed_claims]), datasets)

    header = f"{'rows':>6s} {'claims':>6s} {'nodes':>5s} {'chunk':>6s} {'plan':>9s} {'clean fwd':>10s} {'scrub':>10s} {'scrub/clean':>11s} {'scrub/row':>10s} {'runs':>4s} {'clean-pass rows':>15s}"

    def show(m: dict) -> None:
        print(
            f"{m['rows']:6d} {m['claims']:6d} {m['nodes']:5d} {m['chunk']:6d} {common.fmt_s(m['plan']):>9s} "
            f"{common.fmt_s(m['clean']):>10s} {common.fmt_s(m['scrub']):>10s} {m['scrub'] / m['clean']:10.2f}x "
            f"{common.fmt_s(m['scrub'] / m['rows']):>10s} {m['runs']:4d} {m['clean_rows']:7d} ({m['clean_rows'] / m['rows']:.1f}x)"
        )
        sys.stdout.flush()

    print(f"\nTable 1: one batched scrub of the {args.fixed_claims}-claim hypothesis against rows (pool = reference rows)")
    print(header)
    by_rows = []
    for n_rows in args.rows:
        m = measure(n_rows, args.fixed_claims, datasets)
        by_rows.append(m)
        show(m)

    print(f"\nTable 2: one batched scrub on {args.fixed_rows} rows against claims")
    print(header)
    by_claims = []
    for n_claims in args.claims:
        m = measure(args.fixed_rows, n_claims, datasets)
        by_claims.append(m)
        show(m)

    if len(by_rows) > 1:
        a, b = by_rows[0], by_rows[-1]
        print(
            f"\nrows x{b['rows'] / a['rows']:g}: scrub time x{b['scrub'] / a['scrub']:.1f}, "
            f"clean forward x{b['clean'] / a['clean']:.1f}"
        )
    if len(by_claims) > 1:
        a, b = by_claims[0], by_claims[-1]
        print(
            f"claims {a['claims']} -> {b['claims']}: scrub time x{b['scrub'] / a['scrub']:.1f} "
            f"(scrub/clean {a['scrub'] / a['clean']:.2f}x -> {b['scrub'] / b['clean']:.2f}x)"
        )
    print(
        "(clean-pass rows: rows that the engine's clean passes covered in one scrub, and that over "
        "the dataset's rows; above 1x, the engine recomputed the clean pass per chunk)"
    )
    print(f"total wall time of this script: {common.fmt_s(time.perf_counter() - t_start)}")


if __name__ == "__main__":
    main()
