"""Speed of a head x position activation-patching sweep: `scrub.patching` against one forward per cell.

The model is benchmarks/common.py's GPT-2-small-shaped random model (12 layers x 12 heads, GELU
MLPs, LayerNorm, causal; narrow ``--d-model``). The sweep patches every head's output (``hook_z``)
at every position, denoising: ``12 * 12 * --n-pos`` cells on the same ``--rows`` rows. The
metric is the logit difference between a right and a wrong answer at the last position.

Three implementations, timed in one run (the machine is shared and noisy, so only ratios within
one run mean something):

1. ``scrub.patching.activation_patch`` (two stored passes, each cell continued from its layer and
   position, cells batched along the batch axis);
2. TransformerLens's ``patching.get_act_patch_attn_head_out_by_pos`` (one forward per cell);
3. a plain hook loop (``run_with_hooks`` per cell, the hook writing one head at one position).

The three sweeps' per-cell metric means are checked to agree (float32 tolerance). Goal: scrub
>= 10x faster than either per-cell loop. Each thread setting (default: one thread, and every
usable core, which is torch's default) times all three sweeps with the same thread count.

    .venv/bin/python benchmarks/bench_patching.py [--rows 8] [--n-pos 16] [--d-model 96] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's patching functions draw a progress bar per sweep

import common  # noqa: F401  (sets sys.path)
import torch

from scrub import Dataset
from scrub.patching import activation_patch


def make_data(rows: int, n_pos: int, vocab: int, seed: int) -> tuple[Dataset, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (rows, n_pos), generator=g)
    corrupt = torch.randint(0, vocab, (rows, n_pos), generator=g)
    targets = torch.randint(0, vocab, (rows, n_pos), generator=g)
    wrong = (targets[:, -1] + 1 + torch.randint(0, vocab - 1, (rows,), generator=g)) % vocab
    mask = torch.zeros(rows, n_pos, dtype=torch.bool)
    mask[:, -1] = True
    data = Dataset(tokens=tokens, targets=targets, loss_mask=mask, name="bench", extras={"wrong_target": wrong})
    return data, corrupt


def sweep_times(model, data, corrupt, n_pos: int, threads: int) -> dict:
    """The three sweeps at ``threads`` torch threads: each one's seconds, whether their per-cell
    metric means agree, and the largest gap between them."""
    torch.set_num_threads(threads)
    rows = torch.arange(len(data))
    right, wrong = data.targets[:, -1], data.extras["wrong_target"]

    def logit_diff(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1]  # [n, vocab]
        return (last[rows, right] - last[rows, wrong]).mean()

    t0 = time.perf_counter()
    result = activation_patch(model, data, "heads", corrupt=corrupt, metric="logit_diff", positions="each")
    t_scrub = time.perf_counter() - t0
    # result.sites are (layer, head, position) in that order
    ours = result.patched.reshape(12, 12, n_pos).permute(0, 2, 1).float()  # [layer, pos, head]

    from transformer_lens import patching

    with torch.no_grad():
        _, clean_cache = model.run_with_cache(data.tokens)
        t0 = time.perf_counter()
        tl = patching.get_act_patch_attn_head_out_by_pos(model, corrupt, clean_cache, logit_diff).float()
        t_tl = time.perf_counter() - t0

        t0 = time.perf_counter()
        loop = torch.empty(12, n_pos, 12)
        for layer in range(12):
            name = f"blocks.{layer}.attn.hook_z"
            source = clean_cache[name]
            for pos in range(n_pos):
                for head in range(12):
                    def hook(act, hook, pos=pos, head=head, source=source):
                        act[:, pos, head] = source[:, pos, head]
                        return act

                    loop[layer, pos, head] = logit_diff(model.run_with_hooks(corrupt, fwd_hooks=[(name, hook)]))
        t_loop = time.perf_counter() - t0
    same_tl = torch.allclose(ours, tl, rtol=1e-4, atol=1e-4)
    same_loop = torch.allclose(ours, loop, rtol=1e-4, atol=1e-4)
    gap = max(float((ours - tl).abs().max()), float((ours - loop).abs().max()))
    return dict(scrub=t_scrub, tl=t_tl, loop=t_loop, same=same_tl and same_loop, gap=gap)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--n-pos", type=int, default=16)
    parser.add_argument("--d-model", type=int, default=96)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to measure, each a full set of the three sweeps "
                        "(default: 1 and every usable core)")
    args = parser.parse_args(argv)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    settings = args.threads or sorted({1, usable})
    print(common.machine_banner())
    print("load average (1, 5, 15 min) at the start: %.2f %.2f %.2f" % os.getloadavg())
    model = common.make_model(d_model=args.d_model, vocab=args.vocab, n_ctx=max(args.n_pos, 16), seed=0)
    data, corrupt = make_data(args.rows, args.n_pos, args.vocab, seed=1)
    print(f"sweep: head outputs x positions = {12 * 12 * args.n_pos} cells, {args.rows} rows, "
          f"d_model {args.d_model}, vocab {args.vocab}; thread settings {settings}")
    met = []
    for threads in settings:
        torch.set_num_threads(threads)
        with torch.no_grad():
            t0 = time.perf_counter()
            model(data.tokens)
            t_forward = time.perf_counter() - t0
        r = sweep_times(model, data, corrupt, args.n_pos, threads)
        ratio = min(r["tl"], r["loop"]) / r["scrub"]
        met.append((threads, r["same"] and ratio >= 10, ratio))
        print(f"\n-- {threads} thread(s)")
        print(f"one clean forward (HookedTransformer):   {t_forward * 1e3:9.1f} ms")
        print(f"scrub.patching.activation_patch:         {r['scrub']:9.2f} s  ({r['scrub'] / t_forward:.0f} clean forwards)")
        print(f"TransformerLens get_act_patch_..._by_pos: {r['tl']:9.2f} s  ratio {r['tl'] / r['scrub']:5.1f}x")
        print(f"plain hook loop (run_with_hooks/cell):   {r['loop']:9.2f} s  ratio {r['loop'] / r['scrub']:5.1f}x")
        print(f"same numbers: {r['same']} (largest gap {r['gap']:.2e})")
    print()
    for threads, ok, ratio in met:
        print(f"goal >= 10x with the same numbers, {threads} thread(s): {'MET' if ok else 'NOT MET'} ({ratio:.1f}x, the smaller ratio)")
    print("load average (1, 5, 15 min) at the end:   %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
