"""Speed of the batched engine against the reference engine and against a clean forward pass.

(a) One scrub of the 20-claim hypothesis (benchmarks/common.py) on ``--ref-rows`` reference
    rows (default 16, drawn from a pool of ``--rows``): reference-engine time / batched-engine
    time.                                                               goal: >= 10x
    (The reference engine runs two forward passes per node with inputs, one per per-row leaf and
    one per position of each per-position leaf: 218 passes for this hypothesis, so it is timed
    once, on few rows.)
(b) The 20-variant leave-one-out family (``h.without(claim)`` for each claim) on ``--rows``
    reference rows (default 256), all through ONE ``BatchedEngine.run_many`` call: family time /
    one clean forward of the same rows (``ModelView.forward``; the HookedTransformer forward is
    printed too).                                                       goal: <= 3x
(c) The same family (``PosEmbed`` claims read as ``Embed``: rotary models have no positional
    component) on a Llama-shaped HuggingFace ``LlamaForCausalLM`` with random weights, of the same
    sizes as the GPT-2-shaped model: 12 layers x 12 query heads sharing 4 key/value heads
    (grouped-query attention), SwiGLU MLPs of ``8/3 d_model`` (the same weight count as GPT-2's
    ``4 d_model``), RMSNorm, rotary positions, untied unembedding, SDPA attention. Family time /
    one clean forward (``ModelView.forward``; the HF forward is printed too), printed next to (b).
                                                                        goal: <= 3x

Both engines are asked for the logits where ``scrub.evaluate`` asks for them: at the positions
the metric (cross-entropy) reads, here the last one; the batched engine then computes every tree
node only at the positions those logits depend on (``scrub/engine/positions.py``). The family
is also timed without that pruning (every position) for comparison.

Both figures are ratios measured within one run (the machine is shared and noisy). Each timing
is the median of ``--repeats`` runs after one warm-up (the reference engine: ``--ref-repeats``
runs, no warm-up). Planning (sampling the schedules) is not timed in the ratios; its time is
printed separately. The batched logits are checked against the reference engine's.

    .venv/bin/python benchmarks/bench_engine.py [--rows 256] [--d-model 96] [--profile] [--no-llama]
"""

from __future__ import annotations

import argparse
import sys
import time

import common  # noqa: F401  (sets sys.path)
import torch

import scrub
from scrub.engine.batched import BatchedEngine
from scrub.engine.positions import node_positions, port_positions
from scrub.engine.shared import representatives
from scrub.engine.reference import ReferenceEngine
from scrub.model import ModelView
from scrub.plan import FeatureCache

GOAL_SPEEDUP = 10.0
GOAL_FAMILY = 3.0


def main() -> None:
    parser = common.add_model_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--rows", type=int, default=256, help="dataset rows: the pool, and the reference rows of (b)")
    parser.add_argument(
        "--ref-rows",
        type=int,
        default=16,
        help="reference rows of (a) (the first rows of the dataset); the reference engine runs ~250 "
        "forward passes for the 20-claim hypothesis (32 per per-position leaf), so keep it small",
    )
    parser.add_argument("--ref-repeats", type=int, default=1, help="timed runs of the reference engine")
    parser.add_argument("--claims", type=int, default=20, help="claims of the hypothesis (1..40)")
    parser.add_argument("--memory-budget-mb", type=float, default=1024)
    parser.add_argument("--loop", action="store_true", help="also time the family as separate run() calls")
    parser.add_argument("--profile", action="store_true", help="cProfile one batched scrub and one family run")
    parser.add_argument("--no-llama", action="store_true", help="skip (c), the Llama-shaped model")
    parser.add_argument(
        "--llama-check-rows", type=int, default=4, help="reference rows of the (c) check against the reference engine"
    )
    args = parser.parse_args()
    common.setup(args)

    model = common.make_model(args.d_model, args.vocab, args.n_ctx, args.seed, args.device)
    data = common.make_dataset(args.rows, args.vocab, args.n_ctx, args.seed).to(args.device)
    h = common.make_hypothesis(args.claims)
    variants = common.leave_one_out(h)
    features = FeatureCache(data)
    ref_rows = torch.arange(min(args.ref_rows, args.rows), device=data.device)

    t0 = time.perf_counter()
    small = scrub.plan(h, data, args.seed, model=model, features=features, reference=ref_rows)
    schedule = scrub.plan(h, data, args.seed, model=model, features=features)
    family = [scrub.plan(v, data, args.seed, model=model, features=features) for v in variants]
    t_plan = time.perf_counter() - t0
    n_nodes = sum(1 for _ in schedule.nodes())
    family_nodes = sum(sum(1 for _ in s.nodes()) for s in family)
    print(
        f"data: {args.rows} rows x {args.n_ctx} positions, last position scored | hypothesis: {args.claims} claims, "
        f"{n_nodes} tree nodes | family: {len(family)} leave-one-out variants, {family_nodes} tree nodes | "
        f"planning {2 + len(family)} schedules: {common.fmt_s(t_plan)}"
    )

    # what scrub.evaluate asks of the engine: the logits at the positions the metric reads
    scored = scrub.metrics.cross_entropy().positions(data)
    print(f"scored positions (cross_entropy reads the loss mask): {scored}")
    reference = ReferenceEngine(model, data)
    batched = BatchedEngine(model, data, memory_budget_mb=args.memory_budget_mb, device=args.device)
    view = batched.view if isinstance(batched.view, ModelView) else ModelView.from_hooked(model)
    tokens = data.tokens
    print(
        f"batched engine: memory_budget_mb {args.memory_budget_mb:g}, chunk size {batched.chunk_size([schedule])} "
        f"rows (one scrub of {args.rows} rows), {batched.chunk_size(family, scored)} rows (family, scored positions)"
    )
    sys.stdout.flush()

    r = args.repeats
    with torch.no_grad():
        # ---- (a): the reference engine is slow; its timed run is also the correctness check
        model(tokens[:8])  # warm-up
        passes = [0]
        handle = model.register_forward_pre_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
        t_ref, ref_logits = common.timed(lambda: reference.run(small), args.ref_repeats, warmup=0)
        handle.remove()
        passes_per_run = passes[0] // args.ref_repeats
        t_bat_small, bat_small = common.timed(lambda: batched.run(small, positions=scored), r)
        err = (ref_logits[:, scored] - bat_small).abs().max().item()
        full_err = (ref_logits - batched.run(small)).abs().max().item()
        sub = tokens[ref_rows]
        t_clean_small, _ = common.timed(lambda: view.forward(sub), r)
        # ---- (b): the family through one run_many call, against one clean forward of the same rows
        t_clean_view, clean = common.timed(lambda: view.forward(tokens), r)
        t_clean_tl, clean_tl = common.timed(lambda: model(tokens), r)
        clean_err = (clean - clean_tl).abs().max().item()
        t_bat, _ = common.timed(lambda: batched.run(schedule, positions=scored), r)
        t_fam, fam_logits = common.timed(lambda: batched.run_many(family, positions=scored), r)
        fam_err = max(
            (fam_logits[i] - batched.run(family[i])[:, scored]).abs().max().item() for i in (0, len(family) - 1)
        )
        t_fam_all, _ = common.timed(lambda: batched.run_many(family), 1)
        t_fam_loop = None
        if args.loop:
            t_fam_loop, _ = common.timed(lambda: [batched.run(s, positions=scored) for s in family], 1, warmup=0)

    print(
        f"check: max |batched - reference| logits (a) {err:.2e} at the scored positions, {full_err:.2e} at every "
        f"position (unpruned run); pruned run_many vs unpruned run (b) {fam_err:.2e}; "
        f"|ModelView.forward - HookedTransformer| {clean_err:.2e}"
    )
    print()
    print(f"{'what':62s} {'time':>10s}")
    label = f"(a) {len(ref_rows)} rows: one scrub, reference engine ({passes_per_run} forward passes)"
    print(f"{label:62s} {common.fmt_s(t_ref):>10s}")
    print(f"{'(a) %d rows: one scrub, batched engine' % len(ref_rows):62s} {common.fmt_s(t_bat_small):>10s}")
    print(f"{'(a) %d rows: clean forward, ModelView.forward' % len(ref_rows):62s} {common.fmt_s(t_clean_small):>10s}")
    print(f"{'(b) %d rows: clean forward, ModelView.forward' % args.rows:62s} {common.fmt_s(t_clean_view):>10s}")
    print(f"{'(b) %d rows: clean forward, HookedTransformer' % args.rows:62s} {common.fmt_s(t_clean_tl):>10s}")
    print(f"{'(b) %d rows: one scrub, batched engine' % args.rows:62s} {common.fmt_s(t_bat):>10s}")
    print(f"{'(b) %d rows: family of %d, one run_many call' % (args.rows, len(family)):62s} {common.fmt_s(t_fam):>10s}")
    print(f"{'(b) %d rows: family of %d, every position (no pruning, 1 run)' % (args.rows, len(family)):62s} {common.fmt_s(t_fam_all):>10s}")
    if t_fam_loop is not None:
        print(f"{'(b) %d rows: family as %d run() calls (1 run)' % (args.rows, len(family)):62s} {common.fmt_s(t_fam_loop):>10s}")

    speedup = t_ref / t_bat_small
    family_ratio = t_fam / t_clean_view
    print()
    print(f"(a) reference / batched, one scrub:              {speedup:7.1f}x   goal >= {GOAL_SPEEDUP:g}x: {common.verdict(speedup >= GOAL_SPEEDUP)}")
    print(
        f"(b) family run_many / clean forward (ModelView): {family_ratio:7.1f}x   goal <= {GOAL_FAMILY:g}x: "
        f"{common.verdict(family_ratio <= GOAL_FAMILY)}"
    )
    print(f"    family run_many / clean forward (TL):        {t_fam / t_clean_tl:7.1f}x")
    print(f"    one batched scrub / clean forward (ModelView): {t_bat / t_clean_view:5.1f}x   ({args.rows} rows)")
    print(f"    one batched scrub / clean forward (ModelView): {t_bat_small / t_clean_small:5.1f}x   ({len(ref_rows)} rows)")
    print(f"    family run_many / one batched scrub:         {t_fam / t_bat:7.1f}x")
    sys.stdout.flush()

    # where the floor is: matmul work of the family's component evaluations at the positions
    # the engine computes them (position pruning), counted in clean forwards of the same rows
    cfg = model.cfg
    d, dh, V, n_pos = cfg.d_model, cfg.d_head, cfg.d_vocab_out, data.n_pos
    clean_macs = n_pos * (cfg.n_layers * (4 * cfg.n_heads * d * dh + 2 * d * cfg.d_mlp) + d * V)  # per row
    counts = {"Head": 0, "MLP": 0, "Output": 0}
    work = {"Head": 0.0, "MLP": 0.0, "Output": 0.0}
    needed: dict = {}
    for s in family:
        needed.update(node_positions(s.root, tuple(scored), n_pos, cfg.attention_dir == "causal"))
    same = representatives(family, needed)  # nodes shared by several variants count once
    for s in family:
        for node in s.nodes():
            at = needed.get(id(node))
            if at is None or node.is_leaf or node.copies is not None or same[id(node)] != id(node):
                continue
            kind = type(node.component).__name__
            counts[kind] += 1
            if kind == "Head":
                keys = port_positions(node.component, at, n_pos, cfg.attention_dir == "causal")["k"]
                work[kind] += (2 * len(at) + 2 * len(keys)) * d * dh
            elif kind == "MLP":
                work[kind] += len(at) * 2 * d * cfg.d_mlp
            else:
                work[kind] += len(at) * d * V
    work = {k: v / clean_macs for k, v in work.items()}
    print(
        f"    floor: the family evaluates {counts['Head']} distinct heads, {counts['MLP']} MLPs and {counts['Output']} "
        f"unembeddings at the positions it needs = {sum(work.values()):.2f} clean forwards of matmul work "
        f"(heads {work['Head']:.2f}, MLPs {work['MLP']:.2f}, unembed {work['Output']:.2f}), plus the clean pass"
    )
    sys.stdout.flush()
    llama_ratio = None if args.no_llama else llama_family(args, data, scored)
    if llama_ratio is not None:
        print()
        print(
            f"family of {len(family)} in one run_many / one clean forward (ModelView), {args.rows} rows: GPT-2-shaped "
            f"{family_ratio:.1f}x ({common.verdict(family_ratio <= GOAL_FAMILY)}), Llama-shaped {llama_ratio:.1f}x "
            f"({common.verdict(llama_ratio <= GOAL_FAMILY)}); goal <= {GOAL_FAMILY:g}x"
        )
        sys.stdout.flush()

    if args.profile:
        import cProfile
        import pstats

        for label, fn in (
            ("one batched scrub", lambda: batched.run(schedule, positions=scored)),
            ("family run_many", lambda: batched.run_many(family, positions=scored)),
        ):
            prof = cProfile.Profile()
            with torch.no_grad():
                prof.enable()
                fn()
                prof.disable()
            print(f"\n---- cProfile: {label} (tottime, top 25) ----")
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            print(f"---- cProfile: {label} (cumtime, top 30) ----")
            pstats.Stats(prof).sort_stats("cumtime").print_stats(30)


# ---- (c) the Llama-shaped model -------------------------------------------------------------------


def make_llama(d_model: int, vocab: int, n_ctx: int, seed: int, device: str):
    """A Llama-shaped ``LlamaForCausalLM`` of the GPT-2-shaped model's sizes, every weight random."""
    from transformers import LlamaConfig, LlamaForCausalLM

    n_heads = common.N_HEADS
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=d_model,
        intermediate_size=8 * d_model // 3,  # SwiGLU: three matrices, as many weights as GPT-2's two of 4 d
        num_hidden_layers=common.N_LAYERS,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads // 3,
        head_dim=d_model // n_heads,
        max_position_embeddings=n_ctx,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name:  # RMSNorm gains
                p.copy_(1.0 + 0.1 * noise)
            elif "embed_tokens" in name:
                p.copy_(noise)
            else:  # nn.Linear [out, in], scaled by fan-in
                p.copy_(noise / p.shape[-1] ** 0.5)
    return model.to(device).eval()


def llama_hypothesis(n_claims: int) -> scrub.Hypothesis:
    """`common.make_hypothesis` with ``PosEmbed()`` claims read as ``Embed()`` (no positional component)."""
    h = scrub.Hypothesis(f"bench-{n_claims}-claims-llama")
    claims = {"output": h.output()}
    for label, component, feature, parent, port, positions in common._SPECS[:n_claims]:
        component = scrub.Embed() if isinstance(component, scrub.PosEmbed) else component
        into = claims[parent] if port == "in" else (claims[parent], port)
        claims[label] = h.claim(component, feature, into=into, positions=positions, name=label)
    return h


def llama_family(args, data, scored) -> float:
    """(c): the leave-one-out family on the Llama-shaped model; returns family / clean forward."""
    model = make_llama(args.d_model, args.vocab, args.n_ctx, args.seed, args.device)
    c = model.config
    print(
        f"\n(c) model: Llama-shaped LlamaForCausalLM, random weights: {c.num_hidden_layers} layers x "
        f"{c.num_attention_heads} query heads / {c.num_key_value_heads} key-value heads, d_model {c.hidden_size}, "
        f"d_head {c.head_dim}, SwiGLU d_mlp {c.intermediate_size}, RMSNorm, rotary, vocab {c.vocab_size}, "
        f"{c._attn_implementation} attention"
    )
    h = llama_hypothesis(args.claims)
    features = FeatureCache(data)
    t0 = time.perf_counter()
    family = [scrub.plan(v, data, args.seed, model=model, features=features) for v in common.leave_one_out(h)]
    check_rows = torch.arange(min(args.llama_check_rows, args.rows), device=data.device)
    small = scrub.plan(h, data, args.seed, model=model, features=features, reference=check_rows)
    t_plan = time.perf_counter() - t0
    batched = BatchedEngine(model, data, memory_budget_mb=args.memory_budget_mb, device=args.device)
    view, tokens, r = batched.view, data.tokens, args.repeats
    with torch.no_grad():
        ref_logits = ReferenceEngine(model, data).run(small)[:, scored]
        err = (batched.run(small, positions=scored) - ref_logits).abs().max().item()
        t_clean_view, clean = common.timed(lambda: view.forward(tokens), r)
        t_clean_hf, clean_hf = common.timed(lambda: model(tokens).logits, r)
        clean_err = (clean - clean_hf).abs().max().item()
        t_fam, fam_logits = common.timed(lambda: batched.run_many(family, positions=scored), r)
        fam_err = (fam_logits[0] - batched.run(family[0])[:, scored]).abs().max().item()
    print(
        f"(c) planning {len(family) + 1} schedules: {common.fmt_s(t_plan)} | check: max |batched - reference| "
        f"logits {err:.2e} ({len(check_rows)} rows, scored positions); pruned run_many vs unpruned run "
        f"{fam_err:.2e}; |ModelView.forward - LlamaForCausalLM| {clean_err:.2e}"
    )
    print(f"{'(c) %d rows: clean forward, ModelView.forward' % args.rows:62s} {common.fmt_s(t_clean_view):>10s}")
    print(f"{'(c) %d rows: clean forward, LlamaForCausalLM' % args.rows:62s} {common.fmt_s(t_clean_hf):>10s}")
    print(f"{'(c) %d rows: family of %d, one run_many call' % (args.rows, len(family)):62s} {common.fmt_s(t_fam):>10s}")
    ratio = t_fam / t_clean_view
    print(f"(c) family run_many / clean forward (ModelView): {ratio:7.1f}x   goal <= {GOAL_FAMILY:g}x: {common.verdict(ratio <= GOAL_FAMILY)}")
    print(f"    family run_many / clean forward (HF):        {t_fam / t_clean_hf:7.1f}x")
    sys.stdout.flush()
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        with torch.no_grad():
            prof.enable()
            batched.run_many(family, positions=scored)
            prof.disable()
        print("\n---- cProfile: (c) Llama-shaped family run_many (tottime, top 25) ----")
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return ratio


if __name__ == "__main__":
    main()
