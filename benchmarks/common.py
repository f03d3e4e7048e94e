"""Shared pieces of the benchmarks: a GPT-2-small-shaped random model, a synthetic dataset,
hypotheses of 1..40 claims, timing helpers, and the machine banner.

Everything is built offline from seeded generators; nothing is downloaded.

The model has GPT-2 small's *shape* (12 layers x 12 heads, GELU MLPs of 4 * d_model, LayerNorm,
learned positions, causal attention) but a narrower residual stream by default (``--d-model 96``,
so ``d_head = 8``) so that the benchmarks run in seconds on a small CPU. Pass ``--d-model 768
--vocab 50257 --n-ctx 1024`` for the real sizes (slow on a CPU).

Run a benchmark from the repository root, e.g. ``.venv/bin/python benchmarks/bench_engine.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

# make `import scrub` and `import common` work when a script is run as `python benchmarks/x.py`
_ROOT = Path(__file__).resolve().parent.parent
for _p in (str(_ROOT), str(Path(__file__).resolve().parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402

from scrub import EXACT, MLP, Dataset, Embed, Feature, Head, Hypothesis, PosEmbed  # noqa: E402

N_LAYERS = 12
N_HEADS = 12
MAX_CLAIMS = 40


# ------------------------------------------------------------------------------------ machine


def machine_banner(device: str = "cpu") -> str:
    """One line naming the machine, printed at the top of every benchmark."""
    cpus = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = cpus
    gpu = "none"
    if torch.cuda.is_available():
        gpu = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    lines = [
        f"machine: {platform.platform()} | {platform.machine()} | processor {platform.processor() or '?'}",
        f"cpus: {cpus} (usable {usable}) | torch {torch.__version__}, threads {torch.get_num_threads()} "
        f"| device {device} | GPU {gpu} | python {platform.python_version()}",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- args


def add_model_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--d-model", type=int, default=96, help="residual width (d_head = d_model // 12, d_mlp = 4 d_model)")
    parser.add_argument("--vocab", type=int, default=1000, help="vocabulary size")
    parser.add_argument("--n-ctx", type=int, default=32, help="context length (= dataset positions)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (default 1: on a small shared CPU, OpenMP threads spin against other "
        "processes and make timings erratic; 0 keeps torch's default)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (the median is reported)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def setup(args) -> None:
    if args.threads and args.threads > 0:
        torch.set_num_threads(args.threads)
    print(machine_banner(args.device))
    print(
        f"model: GPT-2-small shape, random weights: {N_LAYERS} layers x {N_HEADS} heads, d_model {args.d_model}, "
        f"d_head {args.d_model // N_HEADS}, d_mlp {4 * args.d_model}, vocab {args.vocab}, n_ctx {args.n_ctx}"
    )
    sys.stdout.flush()


# ------------------------------------------------------------------------------------- model


def make_model(d_model: int = 96, vocab: int = 1000, n_ctx: int = 32, seed: int = 0, device: str = "cpu"):
    """A GPT-2-small-shaped ``HookedTransformer`` with seeded random weights (LN, gelu, causal)."""
    import warnings

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    if d_model % N_HEADS:
        raise SystemExit(f"--d-model must be a multiple of {N_HEADS}, got {d_model}")
    cfg = HookedTransformerConfig(
        n_layers=N_LAYERS,
        n_heads=N_HEADS,
        d_model=d_model,
        d_head=d_model // N_HEADS,
        d_mlp=4 * d_model,
        d_vocab=vocab,
        n_ctx=n_ctx,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="standard",
        attention_dir="causal",
        device=device,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = HookedTransformer(cfg)
    # TransformerLens initialises biases to 0 and LN gains to 1: give them seeded noise too, so
    # that no code path can be skipped "for free" and every weight matters
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g).to(p.dtype).to(p.device)
            leaf = name.split(".")[-1]
            if leaf == "w":  # LayerNorm gain
                p.copy_(1.0 + 0.1 * noise)
            elif p.ndim == 1 or leaf.startswith("b"):  # biases, LayerNorm shifts
                p.copy_(0.02 * noise)
            else:  # weight matrices, scaled by fan-in
                p.copy_(noise / p.shape[-2] ** 0.5)
    return model.eval()


# -------------------------------------------------------------------------------------- data


def make_dataset(n: int, vocab: int = 1000, n_ctx: int = 32, seed: int = 0, name: Optional[str] = None) -> Dataset:
    """``n`` rows of ``n_ctx`` tokens with repetition, next-token targets, only the last position scored.

    Tokens follow a Zipf-like law over the vocabulary (a few frequent tokens), and half the rows
    repeat their first half in the second half (an induction-like pattern), so the per-position
    token and previous-token features have equivalence classes of more than one row.
    """
    g = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64) ** 1.1
    seq = torch.multinomial(weights, n * (n_ctx + 1), replacement=True, generator=g).reshape(n, n_ctx + 1)
    half = (n_ctx + 1) // 2
    repeat = torch.rand(n, generator=g) < 0.5  # [n]
    rep = seq.clone()
    rep[:, half : 2 * half] = seq[:, :half]
    seq = torch.where(repeat[:, None], rep, seq)  # [n, n_ctx + 1]
    tokens, targets = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()  # [n, n_ctx]
    loss_mask = torch.zeros(n, n_ctx, dtype=torch.bool)
    loss_mask[:, -1] = True
    return Dataset(tokens=tokens, targets=targets, loss_mask=loss_mask, name=name or f"synthetic-{n}")


# -------------------------------------------------------------------------------- hypotheses

LAST_TOKEN = Feature("last_token", lambda d: d.tokens[:, -1])  # per row: safe on nodes with children
ANY = Feature.any()
TOKEN = Feature.token()
PREV = Feature.prev_token()

# The 40 claims, in creation order: (name, component, feature, parent name, port, positions).
# Every parent precedes its children, so the first N claims always form a valid hypothesis (a
# claim whose children come later is simply a leaf in the shorter one). Claims that may get
# children carry per-row features (EXACT, last_token, any); per-position features (token,
# prev_token) sit only on claims that stay leaves, so no node is treeified per position.
# The first 20 claims are the "~20-claim" hypothesis of bench_engine.py.
_SPECS: list[tuple] = [
    # layer-11 heads (and MLP 10) into the output
    ("A:H11.0", Head(11, 0), EXACT, "output", "in", None),
    ("B:H11.3", Head(11, 3), LAST_TOKEN, "output", "in", None),
    ("C:H10.7", Head(10, 7), EXACT, "output", "in", None),
    ("D:MLP10", MLP(10), EXACT, "output", "in", None),
    # their q/k/v / in children
    ("A.q:H9.1", Head(9, 1), EXACT, "A:H11.0", "q", None),
    ("A.k:H8.4", Head(8, 4), LAST_TOKEN, "A:H11.0", "k", None),
    ("A.v:MLP7", MLP(7), EXACT, "A:H11.0", "v", None),
    ("B.q:H6.2", Head(6, 2), EXACT, "B:H11.3", "q", None),
    ("B.k:H4.5", Head(4, 5), ANY, "B:H11.3", "k", None),
    ("B.v:Embed", Embed(), TOKEN, "B:H11.3", "v", None),
    ("C.k:H7.9", Head(7, 9), EXACT, "C:H10.7", "k", None),
    ("C.q:PosEmbed", PosEmbed(), EXACT, "C:H10.7", "q", None),
    ("D.in:H9.8", Head(9, 8), EXACT, "D:MLP10", "in", None),
    # deeper
    ("A.q.k:H2.3", Head(2, 3), PREV, "A.q:H9.1", "k", None),
    ("A.q.q:Embed", Embed(), TOKEN, "A.q:H9.1", "q", None),
    ("A.k.v:MLP3", MLP(3), EXACT, "A.k:H8.4", "v", None),
    ("A.k.v.in:Embed", Embed(), TOKEN, "A.k.v:MLP3", "in", None),
    ("B.q.k:H1.6", Head(1, 6), PREV, "B.q:H6.2", "k", None),
    ("C.k.v:H0.11", Head(0, 11), EXACT, "C.k:H7.9", "v", None),
    ("C.k.v.v:Embed", Embed(), TOKEN, "C.k.v:H0.11", "v", None),
    # claims 21..40 (for --claims > 20)
    ("E:H11.7", Head(11, 7), EXACT, "output", "in", (31,)),
    ("E.q:H10.2", Head(10, 2), EXACT, "E:H11.7", "q", None),
    ("E.k:MLP9", MLP(9), LAST_TOKEN, "E:H11.7", "k", None),
    ("E.v:H5.5", Head(5, 5), EXACT, "E:H11.7", "v", None),
    ("D.in:MLP8", MLP(8), EXACT, "D:MLP10", "in", None),
    ("A.v.in:H6.0", Head(6, 0), EXACT, "A.v:MLP7", "in", None),
    ("A.v.in:H3.3", Head(3, 3), ANY, "A.v:MLP7", "in", None),
    ("D.in.v:H8.10", Head(8, 10), EXACT, "D.in:H9.8", "v", None),
    ("D.in.q:Embed", Embed(), TOKEN, "D.in:H9.8", "q", None),
    ("E.q.k:H4.1", Head(4, 1), PREV, "E.q:H10.2", "k", None),
    ("E.k.in:H7.4", Head(7, 4), EXACT, "E.k:MLP9", "in", None),
    ("E.v.q:MLP2", MLP(2), EXACT, "E.v:H5.5", "q", None),
    ("E.v.k:H3.8", Head(3, 8), PREV, "E.v:H5.5", "k", None),
    ("A.v.in.0.q:H2.9", Head(2, 9), EXACT, "A.v.in:H6.0", "q", None),
    ("A.v.in.0.v:MLP1", MLP(1), EXACT, "A.v.in:H6.0", "v", None),
    ("D.in.m.in:H5.11", Head(5, 11), EXACT, "D.in:MLP8", "in", None),
    ("E.v.q.in:Embed", Embed(), TOKEN, "E.v.q:MLP2", "in", None),
    ("A.v.in.0.v.in:H0.4", Head(0, 4), EXACT, "A.v.in.0.v:MLP1", "in", None),
    ("A.v.in.0.v.in.v:Embed", Embed(), TOKEN, "A.v.in.0.v.in:H0.4", "v", None),
    ("E.k.in.q:PosEmbed", PosEmbed(), EXACT, "E.k.in:H7.4", "q", None),
]
assert len(_SPECS) == MAX_CLAIMS


def make_hypothesis(n_claims: int = 20, name: Optional[str] = None) -> Hypothesis:
    """A hypothesis of exactly ``n_claims`` claims (1..40, not counting the output).

    ``n_claims=20`` is the benchmark's standard hypothesis: four components into the output
    (heads 11.0, 11.3, 10.7 and MLP 10), each with q/k/v (or MLP input) children from earlier
    heads and MLPs, leaves on Embed with the token feature, some on heads with prev_token, a mix
    of EXACT, last_token and any features in between. Trees are at most four claims deep.
    """
    if not 1 <= n_claims <= MAX_CLAIMS:
        raise SystemExit(f"--claims must be in 1..{MAX_CLAIMS}, got {n_claims}")
    h = Hypothesis(name or f"bench-{n_claims}-claims")
    claims = {"output": h.output()}
    for label, component, feature, parent, port, positions in _SPECS[:n_claims]:
        into = claims[parent] if port == "in" else (claims[parent], port)
        claims[label] = h.claim(component, feature, into=into, positions=positions, name=label)
    assert len(h.claims) == n_claims + 1
    return h


def leave_one_out(h: Hypothesis) -> list[Hypothesis]:
    """One variant per claim: ``h.without(claim)`` (which also drops the claim's subtree)."""
    return [h.without(c) for c in h.claims if not c.is_output]


# ------------------------------------------------------------------------------------ timing


def timed(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs; and its last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def timed_adaptive(fn: Callable[[], object], repeats: int = 3, cheap_s: float = 2.0) -> tuple[float, int]:
    """Median time of ``fn()``: the first run is timed; if it took under ``cheap_s`` seconds, it
    counts as the warm-up and ``repeats`` more runs are timed. Returns (median, runs timed)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first >= cheap_s or repeats < 1:
        return first, 1
    seconds, _ = timed(fn, repeats, warmup=0)
    return seconds, repeats


def fmt_s(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"
