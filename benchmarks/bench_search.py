"""Search cost: `scrub.search` from `Hypothesis.full` on the GPT-2-shaped random model, in clean-forward
units, batched (every candidate of a step in one engine call per seed) against the same walk with
one scrub per candidate (`batch_candidates=False`: the same decisions, checked).

`Hypothesis.full` of all 12 layers treeifies into an astronomical number of nodes (every path from
a component to the output is its own node: `scrub.hypothesis.full.tree_size`), so the search starts
from the full hypothesis restricted to the last ``--layers`` layers (embeddings always included);
the script prints the tree size of each depth so the limit is visible.

    .venv/bin/python benchmarks/bench_search.py [--layers 1] [--rows 32] [--tau 0.05]
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (sets sys.path)
from common import add_model_args, fmt_s, make_dataset, make_model, setup

import torch

from scrub import Hypothesis
from scrub.hypothesis.full import tree_size
from scrub.search import search


def main() -> None:
    parser = add_model_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--layers", type=int, default=1, help="search over the last K layers (default 1)")
    parser.add_argument("--rows", type=int, default=32, help="reference rows (default 32)")
    parser.add_argument("--tau", type=float, default=0.05)
    parser.add_argument("--skip-serial", action="store_true", help="skip the one-scrub-per-candidate run")
    args = parser.parse_args()
    setup(args)
    model = make_model(args.d_model, args.vocab, args.n_ctx, args.seed, args.device)
    data = make_dataset(args.rows, args.vocab, args.n_ctx, args.seed)
    n_layers = model.cfg.n_layers
    for k in range(1, min(n_layers, 4) + 1):
        h = Hypothesis.full(model, layers=range(n_layers - k, n_layers))
        print(f"full over the last {k} layer(s): {len(h.claims) - 1} claims, {len(h.edges)} edges, "
              f"{tree_size(h):,} tree nodes")
    start = Hypothesis.full(model, layers=range(n_layers - args.layers, n_layers))

    with torch.no_grad():
        model(data.tokens)  # warm-up
        t0 = time.perf_counter()
        model(data.tokens)
        clean = time.perf_counter() - t0
    print(f"clean forward of {args.rows} rows: {fmt_s(clean)}")

    t0 = time.perf_counter()
    fast = search(start, model, data, tau=args.tau, seeds=1)
    batched = time.perf_counter() - t0
    print(f"batched search: {fmt_s(batched)} = {batched / clean:.0f} clean forwards; {fast.calls} engine calls, "
          f"{fast.scored} hypotheses scored; found {len(fast.hypothesis.edges)} of {len(start.edges)} edges, "
          f"LR {fast.loss_recovered:.1%}")
    if args.skip_serial:
        return
    t0 = time.perf_counter()
    slow = search(start, model, data, tau=args.tau, seeds=1, batch_candidates=False)
    serial = time.perf_counter() - t0
    same = sorted(map(str, slow.hypothesis.edges)) == sorted(map(str, fast.hypothesis.edges))
    print(f"one scrub per candidate: {fmt_s(serial)} = {serial / clean:.0f} clean forwards; {slow.calls} engine calls")
    print(f"speed-up {serial / batched:.1f}x; same found hypothesis: {same}")


if __name__ == "__main__":
    main()
