"""Per-position copies: the batched engine on a per-position-heavy hypothesis, against the
previous grouping, in one run.

A claim with children and a per-position feature is treeified per output position (DESIGN.md
section 1): copy ``t`` is needed at ``t`` only, and a head below it at ``t`` (its queries) or at
``0..t`` (through a key or value port of a causal head). The engine groups the nodes of one head
whose query counts fall in one power-of-two bucket into one attention call, queries padded
(`BatchedEngine._query_bucket`); before, it made one call per head and distinct query count, so
the heads below the copies cost one call per copy. ``BatchedEngine.group_by_query_count = True``
restores that grouping, and this script times both on the same schedules:

(a) the per-position-heavy hypothesis (``--tops`` heads of layer 11 claimed with the token at
    each position, each with its q from the token embedding, its k from a layer-9 head carrying
    the previous token, and its v from a layer-10 head carrying the last token, whose own q and v
    are claimed: ``1 + tops * (1 + n_ctx * 6)`` tree nodes), with the logits at every position
    and at the last one;
(b) the IOI circuit of hypotheses/ioi.py (1288 tree nodes) on a GPT-2-shaped random model (as in
    tests/test_ioi.py), at END: its per-position claims are all leaves, so it has no per-position
    copies; printed to show what it costs against a clean forward.

Every time is the median of ``--repeats`` runs after a warm-up; ratios are within one run.

    .venv/bin/python benchmarks/bench_positions.py [--rows 256] [--tops 4] [--ioi-rows 256]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings

import common

import scrub
from scrub import EXACT, MLP, Embed, Head, Hypothesis
from scrub.engine.batched import BatchedEngine
from scrub.model import ModelView


def per_position_heavy(tops: int) -> Hypothesis:
    h = Hypothesis(f"per-position heavy ({tops} heads)")
    out = h.output()
    for i in range(tops):
        top = h.claim(Head(11, i), common.TOKEN, into=out, name=f"11.{i} (token at each position)")
        h.claim(Embed(), common.TOKEN, into=(top, "q"), name=f"Embed -> 11.{i}.q")
        h.claim(Head(9, i), common.PREV, into=(top, "k"), name=f"9.{i} -> 11.{i}.k")
        mid = h.claim(Head(10, i), common.LAST_TOKEN, into=(top, "v"), name=f"10.{i} -> 11.{i}.v")
        h.claim(Embed(), common.TOKEN, into=(mid, "v"), name=f"Embed -> 10.{i}.v")
        h.claim(MLP(8), EXACT, into=(mid, "q"), name=f"MLP8 -> 10.{i}.q")
    return h


def count_calls(engine: BatchedEngine, schedules, positions) -> int:
    calls = []
    cls = type(engine.view)
    original = cls.head_output

    def counted(view, *args, **kwargs):
        calls.append(1)
        return original(view, *args, **kwargs)

    cls.head_output = counted
    try:
        engine.run_many(schedules, positions=positions)
    finally:
        cls.head_output = original
    return len(calls)


def compare(label: str, engine: BatchedEngine, schedules, positions, clean_s: float, repeats: int) -> None:
    rows = []
    outputs = {}
    for old in (False, True):
        engine.group_by_query_count = old
        seconds, out = common.timed(lambda: engine.run_many(schedules, positions=positions), repeats)
        outputs[old] = out
        rows.append((old, seconds, count_calls(engine, schedules, positions)))
    engine.group_by_query_count = False
    diff = max(float((a - b).abs().max()) for a, b in zip(outputs[False], outputs[True]))
    print(f"\n{label}: max |new - old| logits {diff:.2e}")
    print(f"  {'grouping':<38}{'time':>10}{'/clean':>9}{'head calls':>12}")
    for old, seconds, calls in rows:
        name = "one call per query count (before)" if old else "query-count buckets (now)"
        print(f"  {name:<38}{common.fmt_s(seconds):>10}{seconds / clean_s:>8.1f}x{calls:>12}")
    (_, new_s, new_calls), (_, old_s, old_calls) = rows
    print(f"  before / now: time {old_s / new_s:.2f}x, attention calls {old_calls / new_calls:.1f}x")


def ioi_model(vocab: int, n_pos: int):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=12, n_heads=12, d_model=48, d_head=4, d_mlp=192, act_fn="gelu_new", normalization_type="LN",
        d_vocab=vocab, n_ctx=n_pos, device="cpu", seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return HookedTransformer(cfg).eval()


def main() -> int:
    parser = common.add_model_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--tops", type=int, default=4, help="per-position heads of layer 11")
    parser.add_argument("--ioi-rows", type=int, default=256)
    parser.add_argument("--memory-budget-mb", type=float, default=1024)
    args = parser.parse_args()
    common.setup(args)

    model = common.make_model(args.d_model, args.vocab, args.n_ctx, args.seed, args.device)
    data = common.make_dataset(args.rows, args.vocab, args.n_ctx, args.seed)
    h = per_position_heavy(args.tops)
    schedules = [scrub.plan(h, data, 0)]
    nodes = sum(1 for _ in schedules[0].nodes())
    copies = sum(len(n.copies) for n in schedules[0].nodes() if n.copies)
    engine = BatchedEngine(model, data, memory_budget_mb=args.memory_budget_mb)
    view = ModelView.from_hooked(model)
    clean_s, _ = common.timed(lambda: view.forward(data.tokens), args.repeats)
    print(f"(a) {h.name}: {nodes} tree nodes, {copies} per-position copies; {args.rows} rows; "
          f"clean forward {common.fmt_s(clean_s)}")
    compare("(a) logits at every position", engine, schedules, None, clean_s, args.repeats)
    compare(f"(a) logits at the last position ({args.n_ctx - 1})", engine, schedules, [args.n_ctx - 1], clean_s, args.repeats)

    root = common._ROOT
    spec = importlib.util.spec_from_file_location("ioi_hypotheses", root / "hypotheses" / "ioi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tok = scrub.tasks.ioi_word_tokenizer()
    ioi_data = scrub.tasks.ioi(tok, n=args.ioi_rows, seed=0)
    ioi = ioi_model(len(tok), ioi_data.n_pos)
    circuit = module.full()
    ioi_schedules = [scrub.plan(circuit, ioi_data, 0)]
    tree = list(ioi_schedules[0].nodes())
    per_position = sum(1 for n in tree if n.per_position)
    ioi_engine = BatchedEngine(ioi, ioi_data, memory_budget_mb=args.memory_budget_mb)
    ioi_view = ModelView.from_hooked(ioi)
    ioi_clean, _ = common.timed(lambda: ioi_view.forward(ioi_data.tokens), args.repeats)
    print(f"\n(b) {circuit.name}: {len(tree)} tree nodes, {per_position} with a per-position datum "
          f"({sum(1 for n in tree if n.copies)} with copies); {args.ioi_rows} rows; clean forward "
          f"{common.fmt_s(ioi_clean)}")
    end = module.LAYOUT["end_pos"]
    compare(f"(b) IOI at END ({end})", ioi_engine, ioi_schedules, [end], ioi_clean, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
