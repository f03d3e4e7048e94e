"""Peak memory and time of `scrub.evaluate` (batched engine, one seed) on 100k rows.

The model is the zoo's ``induction-2l`` (2-layer attention-only, d_model 64, 4 heads, vocab 50,
n_ctx 32) and the data ``scrub.tasks.induction(n=100_000)``; if either is missing, a random
model of the same shape and random tokens stand in. The hypothesis is the usual induction
circuit: each layer-1 head into the output (EXACT), its key from the previous-token head 0.3
(prev_token), its query and value from the token embedding (token): 16 claims.

``--memory-budget-mb`` (default 12288) is the batched engine's budget, passed as
``scrub.evaluate(..., memory_budget_mb=...)``. With it the clean cache of 100k rows (about 5.7 GB
for this hypothesis) is built once; with a smaller budget the engine rebuilds a cache per chunk
of reference rows, which stays within the budget but repeats clean passes (much slower).

Peak RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the high-water mark of the whole
process (Python, torch, the model and the 100k-row dataset included), printed before and after
the evaluate call.

Guards, because the machine is shared: the script caps its own address space at
``--max-memory-gb`` (default 12; 0 for no cap) so that an engine that overruns its budget fails
here with an allocation error instead of waking the kernel's OOM killer (which may pick another
user's process), and it stops after ``--max-seconds`` (default 600). Either way it prints how far
it got, the peak RSS and the time, and exits with status 1.

    .venv/bin/python benchmarks/bench_memory.py [--rows 100000] [--memory-budget-mb 12288]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import time

import common  # noqa: F401  (sets sys.path)
import torch

import scrub
from scrub import EXACT, Dataset, Embed, Feature, Head, Hypothesis


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20  # Linux: KiB, macOS: bytes


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def load_model_and_data(n_rows: int, seed: int):
    """The zoo's induction-2l and the induction task, or random stand-ins of the same shape."""
    try:
        model = scrub.zoo.load("induction-2l")
        data = scrub.tasks.induction(n=n_rows, seed=seed)
        return model, data, "zoo induction-2l + scrub.tasks.induction"
    except Exception as exc:  # noqa: BLE001 - any failure: fall back, and say why
        print(f"(zoo model or induction task unavailable: {exc!r}; using a random model and random data)")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=64, n_heads=4, d_head=16, d_vocab=50, n_ctx=32, attn_only=True,
        normalization_type="LN", positional_embedding_type="standard", attention_dir="causal", device="cpu",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HookedTransformer(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, 50, (n_rows, 33), generator=g)
    mask = torch.zeros(n_rows, 32, dtype=torch.bool)
    mask[:, 16:] = True
    data = Dataset(tokens=seq[:, :-1].contiguous(), targets=seq[:, 1:].contiguous(), loss_mask=mask, name="random")
    return model, data, "random 2-layer attn-only model + random tokens"


class _OutOfTime(Exception):
    pass


def _out_of_time(signum, frame):
    raise _OutOfTime("stopped by the --max-seconds guard")


def induction_hypothesis(prev_head: tuple[int, int] = (0, 3), n_heads: int = 4) -> Hypothesis:
    h = Hypothesis("induction circuit")
    out = h.output()
    for i in range(n_heads):
        ind = h.claim(Head(1, i), EXACT, into=out, name=f"induction 1.{i}")
        h.claim(Head(*prev_head), Feature.prev_token(), into=(ind, "k"), name=f"prev-token {prev_head[0]}.{prev_head[1]} -> 1.{i}.k")
        h.claim(Embed(), Feature.token(), into=(ind, "q"), name=f"embed -> 1.{i}.q")
        h.claim(Embed(), Feature.token(), into=(ind, "v"), name=f"embed -> 1.{i}.v")
    return h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--memory-budget-mb", type=float, default=12288)
    parser.add_argument("--batch-size", type=int, default=None, help="scrub.evaluate(batch_size=...) (default: None)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of scrub.evaluate")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-memory-gb", type=float, default=20, help="address-space cap of this process (0: none)")
    parser.add_argument("--max-seconds", type=int, default=600, help="stop after this many seconds (0: never)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(common.machine_banner("cpu"))
    if args.max_memory_gb > 0:
        cap = int(args.max_memory_gb * 2**30)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
        print(f"guard: address space capped at {args.max_memory_gb:g} GiB (RLIMIT_AS)")
    if args.max_seconds > 0:
        signal.signal(signal.SIGALRM, _out_of_time)
        signal.alarm(args.max_seconds)
        print(f"guard: stops after {args.max_seconds} s")
    print(f"peak RSS at start (python + torch imported): {peak_rss_mb():.0f} MiB")

    t0 = time.perf_counter()
    model, data, source = load_model_and_data(args.rows, args.seed)
    h = induction_hypothesis(n_heads=model.cfg.n_heads)
    t_load = time.perf_counter() - t0
    cfg = model.cfg
    print(
        f"model: {source}: {cfg.n_layers} layers, {cfg.n_heads} heads, d_model {cfg.d_model}, vocab {cfg.d_vocab}, "
        f"n_ctx {cfg.n_ctx}, attn_only {cfg.attn_only}"
    )
    print(f"data: {len(data)} rows x {data.n_pos} positions, {int(data.loss_mask.sum())} scored positions | "
          f"hypothesis: {len(h.claims) - 1} claims | built in {common.fmt_s(t_load)}")
    print(f"memory_budget_mb {args.memory_budget_mb:g}, batch_size {args.batch_size}, n_boot {args.n_boot}")
    rss_before = current_rss_mb()
    peak_before = peak_rss_mb()
    print(f"RSS before evaluate: {rss_before:.0f} MiB (peak so far {peak_before:.0f} MiB)")
    sys.stdout.flush()

    t0 = time.perf_counter()
    try:
        result = scrub.evaluate(
            h, model, data, seeds=1, engine="batched", batch_size=args.batch_size, n_boot=args.n_boot,
            memory_budget_mb=args.memory_budget_mb,
        )
    except (MemoryError, RuntimeError, _OutOfTime) as exc:
        t_eval = time.perf_counter() - t0
        what = "out of time" if isinstance(exc, _OutOfTime) else "out of memory"
        if isinstance(exc, RuntimeError) and "allocate" not in str(exc):
            raise
        print(f"\nFAILED ({what}) after {common.fmt_s(t_eval)}: {str(exc).splitlines()[0][:200]}")
        print(f"peak RSS (whole process):             {peak_rss_mb():.0f} MiB (RSS before evaluate {rss_before:.0f} MiB)")
        print(f"memory budget:                        {args.memory_budget_mb:g} MiB")
        sys.exit(1)
    signal.alarm(0)
    t_eval = time.perf_counter() - t0
    peak_after = peak_rss_mb()

    print(
        f"result: loss recovered {result.loss_recovered:.3f} +- {result.stderr:.3f} | model {result.m_model:.3f}, "
        f"baseline {result.m_base:.3f}, scrubbed {result.m_scrub:.3f} (engine {result.engine})"
    )
    print()
    print(f"scrub.evaluate time:                  {common.fmt_s(t_eval)}")
    print(f"peak RSS (whole process):             {peak_after:.0f} MiB")
    print(f"peak RSS growth during evaluate:      {max(0.0, peak_after - rss_before):.0f} MiB over the {rss_before:.0f} MiB before it")
    print(f"memory budget:                        {args.memory_budget_mb:g} MiB")
    # what the evaluate call must hold whatever the engine: logits of the scrub and the baseline,
    # and the clean logits for the model's own metric
    logits_mb = len(data) * data.n_pos * cfg.d_vocab_out * 4 / 2**20
    print(f"(one [rows, pos, vocab] float32 logits tensor of this dataset: {logits_mb:.0f} MiB)")


if __name__ == "__main__":
    main()
