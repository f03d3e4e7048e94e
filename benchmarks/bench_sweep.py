"""A sweep of 40 hypotheses x 3 seeds of the zoo's induction model: in-process, then on a local
Ray cluster of 1 and of 2 workers. Prints wall times, their ratios, the Ray start-up (cluster and
workers' first import), and the overhead Ray adds per task (from a sweep of many tiny tasks).

Every run writes to a fresh store; the cells of all runs are checked equal (bit for bit), so the
three executors compute the same numbers.

    .venv/bin/python benchmarks/bench_sweep.py [--n 128] [--seeds 3] [--per-task 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import scrub  # noqa: E402
from scrub import EXACT, Embed, Feature, Head, Hypothesis  # noqa: E402
from scrub.store import Store  # noqa: E402
from scrub.store.sweep import sweep  # noqa: E402

from common import machine_banner  # noqa: E402


def hypotheses(count: int = 40) -> list[Hypothesis]:
    """``count`` distinct hypotheses: subsets of the four induction heads into the output, the first
    one's query from the token embedding and its key from a previous-token head (or unclaimed)."""
    out = []
    subsets = [s for k in range(1, 5) for s in combinations(range(4), k)]
    for keys in (None, (0, 3), (0, 0)):
        for subset in subsets:
            h = Hypothesis(f"heads {list(subset)} k={keys}")
            root = h.output()
            claims = [h.claim(Head(1, i), EXACT, into=root) for i in subset]
            if keys is not None:
                h.claim(Embed(), Feature.token(), into=(claims[0], "q"))
                h.claim(Head(*keys), Feature.prev_token(), into=(claims[0], "k"))
            out.append(h)
    return out[:count]


def cells_of(path: Path) -> dict:
    return {c.key: c for c in Store.open(path).cells()}


def run(label: str, hyps, model, data, seeds: int, per_task: int, executor: str) -> tuple[float, Path]:
    store = Path(tempfile.mkdtemp(prefix=f"bench-sweep-{label}-"))
    start = time.perf_counter()
    summary = sweep(hyps, {"induction-2l": model}, {"induction": data}, seeds=seeds, store=store,
                    executor=executor, hypotheses_per_task=per_task, progress=False)
    seconds = time.perf_counter() - start
    print(f"{label:>14}: {seconds:7.2f} s  ({summary.computed} cells in {summary.tasks} tasks)", flush=True)
    return seconds, store


def warm_workers(n: int) -> float:
    """Time for ``n`` fresh workers to import scrub (what a cluster's first tasks pay once)."""
    import ray

    @ray.remote(num_cpus=1)
    def touch():
        import scrub as s  # noqa: F401

        return os.getpid()

    start = time.perf_counter()
    ray.get([touch.remote() for _ in range(n)])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=128, help="reference rows (default 128)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--hypotheses", type=int, default=40)
    parser.add_argument("--per-task", type=int, default=4, help="hypotheses per task (default 4: 10 tasks)")
    parser.add_argument("--tiny-n", type=int, default=8, help="rows of the per-task overhead sweep (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")])
    print(machine_banner())
    model = scrub.zoo.load("induction-2l")
    data = scrub.tasks.induction(n=args.n, seed=0)
    tiny = scrub.tasks.induction(n=args.tiny_n, seed=0)
    hyps = hypotheses(args.hypotheses)
    print(f"sweep: {len(hyps)} hypotheses x {args.seeds} seeds, {args.n} rows, {args.per_task} hypotheses per task")

    import ray

    local, local_store = run("in-process", hyps, model, data, args.seeds, args.per_task, "local")
    tiny_local, _ = run("tiny, local", hyps, model, tiny, 1, 1, "local")
    times, stores, overhead = {}, {}, {}
    for workers in (1, 2):
        start = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        started = time.perf_counter() - start
        warm = warm_workers(workers)
        start = time.perf_counter()  # the first tasks also load the model (TransformerLens) in each worker
        sweep(hyps, {"induction-2l": model}, {"induction": tiny}, seeds=[99], store=tempfile.mkdtemp(),
              executor="ray", hypotheses_per_task=1, progress=False)
        first = time.perf_counter() - start
        print(f"ray, {workers} worker(s): cluster start {started:.1f} s, workers' first import of scrub {warm:.1f} s, "
              f"first tiny sweep (model loaded in each worker) {first:.1f} s")
        times[workers], stores[workers] = run(f"ray {workers} worker", hyps, model, data, args.seeds, args.per_task, "ray")
        tiny_ray, _ = run(f"tiny, ray {workers}", hyps, model, tiny, 1, 1, "ray")
        overhead[workers] = (tiny_ray - tiny_local) / len(hyps)
        ray.shutdown()
    reference = cells_of(local_store)
    for workers, store in stores.items():
        other = cells_of(store)
        same = other.keys() == reference.keys() and all(other[k].same_values(reference[k]) for k in reference)
        print(f"cells of ray {workers} worker(s) == in-process cells, bit for bit: {same}")
    print(f"ratio ray 1 worker / in-process: {times[1] / local:.2f}")
    print(f"ratio ray 2 workers / in-process: {times[2] / local:.2f}")
    print(f"speed-up 2 workers over 1: {times[1] / times[2]:.2f}")
    for workers, value in overhead.items():
        print(f"overhead per task on ray ({workers} worker(s)), from {len(hyps)} tiny tasks: {1000 * value:.0f} ms")


if __name__ == "__main__":
    main()
