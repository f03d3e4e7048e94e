"""Train the zoo's models from their recipes and write their weights.

Usage::

    python -m scrub.zoo.train induction-2l      # re-train one model, write weights/induction-2l.*
    python -m scrub.zoo.train --all             # every recipe
    python -m scrub.zoo.train induction-2l --steps 300 --out /tmp/zoo   # a quick trial elsewhere

Training is deterministic: the weight initialisation and every batch come from the recipe's seed
(batches from a seeded ``torch.Generator``; nothing reads the caller's global RNG state), and it
runs with ``torch.use_deterministic_algorithms(True)`` and the recipe's thread count, so the result
is bit-exact on a given machine and torch version (other CPUs or versions may differ in the last
bits, and after thousands of steps in more). After
training the model is evaluated on the recipe's held-out dataset; the losses, the per-head
attention scores and the loss curve are written next to the weights as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

import scrub.tasks
from scrub.data import Dataset
from scrub.zoo.recipes import RECIPES, Recipe, build_model, get_recipe

__all__ = ["train", "evaluate", "save", "main", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
HEAD_THRESHOLD = 0.3  # an attention score above this marks a head as a previous-token / induction head
HEAD_KEYS = (
    "prev_token_scores",
    "prev_token_scores_first_copy",
    "induction_scores",
    "mean_ablation_loss",
    "prev_token_head",
    "prev_token_heads",
    "induction_heads",
)


def _task_data(recipe: Recipe, n: int, seed: int, held_out: bool = False) -> Dataset:
    kwargs = recipe.task_kwargs
    if held_out and recipe.eval_task_kwargs is not None:
        kwargs = recipe.eval_task_kwargs
    return getattr(scrub.tasks, recipe.task)(n=n, seed=seed, **kwargs)


def _lr_at(recipe: Recipe, step: int, steps: int) -> float:
    """The learning rate of step ``step`` (1-based): linear warm-up, then constant or cosine."""
    factor = min(1.0, step / recipe.warmup_steps) if recipe.warmup_steps else 1.0
    if recipe.lr_schedule == "cosine":
        factor *= 0.5 * (1.0 + math.cos(math.pi * step / steps))
    return recipe.lr * factor


def _loss(model, batch: Dataset, loss_positions: str) -> torch.Tensor:
    logits = model(batch.tokens, return_type="logits")  # [b, pos, vocab]
    if loss_positions == "all":
        # every next-token prediction: position t predicts tokens[t + 1]
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), batch.tokens[:, 1:].flatten())
    return F.cross_entropy(logits[batch.loss_mask], batch.targets[batch.loss_mask])


def train(
    recipe: Recipe | str,
    *,
    steps: Optional[int] = None,
    seed: Optional[int] = None,
    log: Optional[Callable[[str], None]] = print,
    log_every: int = 250,
):
    """Train a model from its recipe.

    Args:
        recipe: a `Recipe` or the name of one.
        steps, seed: override the recipe's (for quick trials and tests).
        log: where progress lines go (``None``: silent).
        log_every: steps between progress lines.

    Returns:
        ``(model, training)``: the trained ``HookedTransformer`` (eval mode, CPU) and a JSON-able
        dict of the training settings, wall time and loss curve.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    steps = recipe.steps if steps is None else int(steps)
    seed = recipe.seed if seed is None else int(seed)
    threads_before = torch.get_num_threads()
    deterministic_before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.set_num_threads(recipe.threads)
    # With more than one thread the CPU embedding backward accumulates in a varying order; the
    # deterministic algorithms make training bit-exact for a given thread count.
    torch.use_deterministic_algorithms(True)
    try:
        model = build_model(recipe.config, seed=seed, device="cpu")
        model.train()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas
        )
        batches = torch.Generator().manual_seed(seed)  # draws one dataset seed per step
        curve: list[list[float]] = []
        running, start = 0.0, time.perf_counter()
        for step in range(1, steps + 1):
            batch_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=batches))
            batch = _task_data(recipe, recipe.batch_size, batch_seed)
            if recipe.lr_schedule != "constant" or recipe.warmup_steps:
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(recipe, step, steps)
            loss = _loss(model, batch, recipe.loss_positions)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += float(loss.detach())
            if step % log_every == 0 or step == steps:
                span = log_every if step % log_every == 0 else step % log_every
                curve.append([step, round(running / span, 5)])
                running = 0.0
                if log is not None:
                    log(
                        f"[{recipe.name}] step {step:5d}/{steps}  train loss {curve[-1][1]:.4f}  "
                        f"({time.perf_counter() - start:.1f} s)"
                    )
        wall = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(deterministic_before[0], warn_only=deterministic_before[1])
    model.eval()
    from importlib.metadata import PackageNotFoundError, version

    try:
        tl_version = version("transformer-lens")
    except PackageNotFoundError:  # pragma: no cover - an unusual install
        tl_version = "unknown"
    training = {
        "task": recipe.task,
        "task_kwargs": dict(recipe.task_kwargs),
        "loss_positions": recipe.loss_positions,
        "optimizer": "AdamW",
        "lr": recipe.lr,
        **(
            {"lr_schedule": recipe.lr_schedule, "warmup_steps": recipe.warmup_steps, "betas": list(recipe.betas)}
            if recipe.lr_schedule != "constant" or recipe.warmup_steps or recipe.betas != (0.9, 0.999)
            else {}
        ),
        "weight_decay": recipe.weight_decay,
        "batch_size": recipe.batch_size,
        "steps": steps,
        "seed": seed,
        "threads": recipe.threads,
        "wall_s": round(wall, 2),
        "final_train_loss": curve[-1][1] if curve else None,
        "loss_curve": curve,
        "torch_version": torch.__version__,
        "transformer_lens_version": tl_version,
    }
    return model, training


# ---- evaluation ---------------------------------------------------------------------------------


def _masked_ce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    return float(F.cross_entropy(logits[mask], targets[mask]))


@torch.no_grad()
def evaluate_induction(model, data: Dataset) -> dict[str, Any]:
    """Losses and per-head attention scores of an induction model on ``data``.

    - ``loss_induction_mask``: mean CE on ``data.loss_mask`` (second-copy tokens but the first).
    - ``loss_first_copy``: mean CE on the same positions one period earlier (first-copy tokens
      but the first; unpredictable, so about ln(vocab) for a model that has learned the task).
    - ``prev_token_scores[l][h]``: mean attention from position t to t - 1 (t >= 1).
    - ``prev_token_scores_first_copy[l][h]``: the same over the first copy but its first token
      (t in [n_ctx - 2L + 1, n_ctx - L - 1]): the keys that the induction heads look for.
    - ``induction_scores[l][h]``: mean attention from a scored position t to t - L + 1.
    - ``mean_ablation_loss[l][h]``: ``loss_induction_mask`` with head l.h's ``hook_z`` replaced by
      its mean over the dataset (per position).
    """
    n, n_pos = data.tokens.shape
    period = data.extras["period"]  # [n]
    pos = torch.arange(n_pos)[None, :]  # [1, pos]
    second = data.extras["second_start"][:, None]  # [n, 1]
    first_copy_mask = (pos >= second - period[:, None]) & (pos <= second - 2)  # [n, pos]
    logits, cache = model.run_with_cache(
        data.tokens, names_filter=lambda k: k.endswith(("hook_pattern", "hook_z"))
    )  # logits: [n, pos, vocab]
    result: dict[str, Any] = {
        "loss_induction_mask": _masked_ce(logits, data.targets, data.loss_mask),
        "loss_first_copy": _masked_ce(logits, data.targets, first_copy_mask),
        "loss_all_next_token": float(
            F.cross_entropy(logits[:, :-1].flatten(0, 1), data.tokens[:, 1:].flatten())
        ),
        "ln_vocab": math.log(model.cfg.d_vocab),
    }
    rows, cols = data.loss_mask.nonzero(as_tuple=True)  # scored (row, t)
    # first copy but its first token: [n, pos] -> (row, t) pairs
    f_rows, f_cols = ((pos > second - period[:, None]) & (pos < second)).nonzero(as_tuple=True)
    prev_scores, prev_first, ind_scores, ablation = [], [], [], []
    for layer in range(model.cfg.n_layers):
        pattern = cache["pattern", layer]  # [n, head, q, k]
        t = torch.arange(1, n_pos)
        prev_scores.append(pattern[:, :, t, t - 1].mean(dim=(0, 2)).tolist())  # [head]
        prev_first.append(pattern[f_rows, :, f_cols, f_cols - 1].mean(dim=0).tolist())  # [head]
        src = cols - period[rows] + 1
        ind_scores.append(pattern[rows, :, cols, src].mean(dim=0).tolist())  # [head]
        z_mean = cache["z", layer].mean(dim=0)  # [pos, head, d_head]
        layer_ablation = []
        for head in range(model.cfg.n_heads):

            def hook(z, hook, head=head, z_mean=z_mean):  # z: [n, pos, head, d_head]
                z = z.clone()
                z[:, :, head] = z_mean[:, head]
                return z

            ablated = model.run_with_hooks(
                data.tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)]
            )
            layer_ablation.append(_masked_ce(ablated, data.targets, data.loss_mask))
        ablation.append(layer_ablation)
    result["prev_token_scores"] = prev_scores
    result["prev_token_scores_first_copy"] = prev_first
    result["induction_scores"] = ind_scores
    result["mean_ablation_loss"] = ablation
    layer0 = prev_scores[0]
    result["prev_token_head"] = [0, max(range(len(layer0)), key=layer0.__getitem__)]
    result["prev_token_heads"] = [
        [0, h] for h, s in enumerate(prev_first[0]) if s > HEAD_THRESHOLD
    ]
    last = model.cfg.n_layers - 1
    result["induction_heads"] = [
        [last, h] for h, s in enumerate(ind_scores[last]) if s > HEAD_THRESHOLD
    ]
    return _rounded(result)


PARENS_FEATURES = ("count_test", "horizon_test", "prefix_horizon_test", "starts_open", "count_and_starts_open", "balanced")


def _parens_subsets(data: Dataset) -> dict[str, torch.Tensor]:
    e = data.extras
    return {
        "balanced": e["balanced"],
        "unbalanced": ~e["balanced"],
        "count_failures": ~e["count_test"],
        "horizon_only_failures": e["count_test"] & ~e["horizon_test"],
    }


@torch.no_grad()
def evaluate_parens(model, data: Dataset, resample_n: int = 2048) -> dict[str, Any]:
    """Accuracy and loss of a paren-balance classifier, and what each head writes at position 0.

    - ``loss`` / ``accuracy`` (class at position 0), also per subset (``subsets``): balanced,
      unbalanced, count failures, horizon-only failures (count test passed, horizon test failed).
    - ``dla[l][h]``: direct logit attribution of head l.h at position 0 (its output through the
      final LayerNorm, with that row's scale, onto ``W_U[:, 1] - W_U[:, 0]``: + means "balanced"),
      averaged over each subset (``dla_subsets`` names the order).
    - ``eta2[l][h]``: for each feature in ``PARENS_FEATURES``, the share of the variance of the
      head's output vector at position 0 that the feature's classes explain (1: the output is a
      function of the feature).
    - ``attn_pos0_to_pos1[l][h]``: mean attention from position 0 to position 1.
    - ``direct_resample_loss``: the class loss when only one writer's direct path to the output is
      resampled (from a random row, or from a row agreeing on a feature; every other direct path
      is exact), computed with `scrub.evaluate` on the first ``resample_n`` rows, seed 0.
    """
    logits, cache = model.run_with_cache(
        data.tokens, names_filter=lambda k: k.endswith(("hook_z", "hook_pattern", "ln_final.hook_scale"))
    )
    lg0, y = logits[:, 0], data.targets[:, 0]  # [n, 2], [n]
    ce = F.cross_entropy(lg0, y, reduction="none")  # [n]
    correct = (lg0.argmax(-1) == y).float()
    subsets = _parens_subsets(data)
    out: dict[str, Any] = {"loss": float(ce.mean()), "accuracy": float(correct.mean()), "subsets": {}}
    for name, m in subsets.items():
        out["subsets"][name] = {"n": int(m.sum()), "loss": float(ce[m].mean()), "accuracy": float(correct[m].mean())}
    direction = model.ln_final.w * (model.W_U[:, 1] - model.W_U[:, 0])  # [d]
    scale = cache["ln_final.hook_scale"][:, 0, 0]  # [n]
    cfg = model.cfg
    dla, eta2, attn = [], [], []
    for layer in range(cfg.n_layers):
        z = cache["z", layer][:, 0]  # [n, head, d_head]
        res = torch.einsum("nhe,hed->nhd", z, model.W_O[layer])  # [n, head, d]
        res_c = res - res.mean(-1, keepdim=True)
        head_dla = (res_c @ direction) / scale[:, None]  # [n, head]
        dla.append([[float(head_dla[m, h].mean()) for m in subsets.values()] for h in range(cfg.n_heads)])
        eta2.append([[_eta2(res[:, h], data.extras[f]) for f in PARENS_FEATURES] for h in range(cfg.n_heads)])
        attn.append(cache["pattern", layer][:, :, 0, 1].mean(0).tolist())
    out.update(dla=dla, dla_subsets=list(subsets), eta2=eta2, eta2_features=list(PARENS_FEATURES), attn_pos0_to_pos1=attn)
    out["direct_resample_loss"] = _direct_resample(model, data, resample_n)
    return _rounded(out)


def _eta2(values: torch.Tensor, feature: torch.Tensor) -> float:
    """Between-class share of the variance of ``values`` [n, d] for the classes of ``feature`` [n]."""
    _, ids = torch.unique(feature, return_inverse=True)
    centred = values - values.mean(0)
    total = float((centred**2).sum())
    sums = torch.zeros(int(ids.max()) + 1, values.shape[1]).index_add_(0, ids, centred)
    between = float(((sums**2).sum(-1) / torch.bincount(ids).float()).sum())
    return between / total if total > 0 else float("nan")


def _direct_resample(model, data: Dataset, n: int) -> dict[str, Any]:
    """``{writer: {"any": loss, feature: loss, ...}}``: one direct path resampled, the rest exact."""
    import scrub
    from scrub import EXACT, MLP, Embed, Feature, Head, Hypothesis, PosEmbed

    cfg = model.cfg
    writers = [Embed(), PosEmbed()]
    for layer in range(cfg.n_layers):
        writers += [Head(layer, h) for h in range(cfg.n_heads)] + [MLP(layer)]
    result: dict[str, Any] = {"model": None}
    for target in writers:
        if isinstance(target, PosEmbed):
            continue
        feats = {"any": None} if not isinstance(target, Head) else {"any": None, **{f: Feature.extra(f) for f in PARENS_FEATURES}}
        row = {}
        for label, feature in feats.items():
            h = Hypothesis(f"{target} direct path <- {label}")
            out = h.output()
            for w in writers:
                if w != target:
                    h.claim(w, EXACT, into=out)
            if feature is not None:
                h.claim(target, feature, into=out)
            r = scrub.evaluate(h, model, data, n=n, seeds=1, n_boot=10)
            row[label] = r.m_scrub
            result["model"], result["baseline"] = r.m_model, r.m_base
        result[str(target)] = row
    return result


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


@torch.no_grad()
def evaluate(model, recipe: Recipe) -> dict[str, Any]:
    """Evaluate ``model`` on the recipe's held-out dataset (task-specific where known)."""
    data = _task_data(recipe, recipe.eval_n, recipe.eval_seed, held_out=True)
    kwargs = recipe.task_kwargs if recipe.eval_task_kwargs is None else recipe.eval_task_kwargs
    header = {
        "dataset": f"{recipe.task}(n={recipe.eval_n}, seed={recipe.eval_seed}, "
        + ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        + ")",
        "fingerprint": data.fingerprint(),
    }
    if recipe.task == "induction":
        return {**header, **evaluate_induction(model, data)}
    if recipe.task == "parens":
        return {**header, **evaluate_parens(model, data)}
    logits = model(data.tokens, return_type="logits")
    return {**header, "loss_mask": round(_masked_ce(logits, data.targets, data.loss_mask), 4)}


def _notes(metrics: dict[str, Any]) -> str:
    if "prev_token_scores" not in metrics:
        return ""
    prev, first = metrics["prev_token_scores"][0], metrics["prev_token_scores_first_copy"][0]
    ind, abl = metrics["induction_scores"][-1], metrics["mean_ablation_loss"]
    last = len(metrics["induction_scores"]) - 1
    p = metrics["prev_token_head"][1]
    return (
        f"Measured on {metrics['dataset']} with run_with_cache. Previous-token head: 0.{p} "
        f"(mean attention t -> t-1 = {prev[p]:.2f} over all t >= 1, {first[p]:.2f} over the "
        f"first copy). Layer 0, head: all-t score / first-copy score / induction-position loss "
        f"when mean-ablated: "
        + ", ".join(f"0.{h}: {prev[h]:.2f}/{first[h]:.2f}/{abl[0][h]:.2f}" for h in range(len(prev)))
        + f". Induction heads (mean attention from a scored second-copy position t to t-L+1 above "
        f"{HEAD_THRESHOLD}): "
        + (", ".join(f"{l}.{h}" for l, h in metrics["induction_heads"]) or "none")
        + f". Layer {last}, head: induction score / loss when mean-ablated: "
        + ", ".join(f"{last}.{h}: {ind[h]:.2f}/{abl[last][h]:.2f}" for h in range(len(ind)))
        + f". Unablated loss on induction positions {metrics['loss_induction_mask']:.3f}, on "
        f"first-copy positions {metrics['loss_first_copy']:.3f} (ln V = {metrics['ln_vocab']:.3f})."
    )


def _dumps(record: dict[str, Any]) -> str:
    """JSON with two-space indents, but each innermost list of numbers on one line."""
    text = json.dumps(record, indent=2)
    return re.sub(
        r"\[\s*([-+0-9.eE,\s]+?)\s*\]",
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
        text,
    )


def save(model, recipe: Recipe, training: dict[str, Any], metrics: dict[str, Any], out_dir: Path) -> Path:
    """Write ``out_dir/NAME.safetensors`` (parameters only) and ``out_dir/NAME.json``."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.named_parameters()}
    weights = out_dir / f"{recipe.name}.safetensors"
    save_file(tensors, str(weights), metadata={"name": recipe.name, "format": "pt"})
    record = {
        "name": recipe.name,
        "description": recipe.description,
        "config": dict(recipe.config),
        "training": training,
        "eval": {k: v for k, v in metrics.items() if k not in HEAD_KEYS},
        "heads": {k: v for k, v in metrics.items() if k in HEAD_KEYS},
        "notes": _notes(metrics),
    }
    meta = out_dir / f"{recipe.name}.json"
    meta.write_text(_dumps(record) + "\n")
    return weights


def _print_heads(metrics: dict[str, Any], log: Callable[[str], None]) -> None:
    if "prev_token_scores" not in metrics:
        return
    log(
        "per-head scores (layer.head: prev-token all t | prev-token first copy | induction | "
        "induction-position loss when mean-ablated)"
    )
    for layer, (prev, first, ind, abl) in enumerate(
        zip(
            metrics["prev_token_scores"],
            metrics["prev_token_scores_first_copy"],
            metrics["induction_scores"],
            metrics["mean_ablation_loss"],
        )
    ):
        for head in range(len(prev)):
            log(f"  {layer}.{head}: {prev[head]:.3f} | {first[head]:.3f} | {ind[head]:.3f} | {abl[head]:.3f}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scrub.zoo.train", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"recipes to train: {sorted(RECIPES)}")
    parser.add_argument("--all", action="store_true", help="train every recipe")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's step count")
    parser.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"output folder (default {WEIGHTS_DIR})")
    args = parser.parse_args(argv)
    names = sorted(RECIPES) if args.all else args.names
    if not names:
        parser.error(f"name a recipe ({', '.join(sorted(RECIPES))}) or pass --all")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; recipes: {sorted(RECIPES)}")
    for name in names:
        recipe = RECIPES[name]
        model, training = train(recipe, steps=args.steps, seed=args.seed)
        metrics = evaluate(model, recipe)
        print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)}, indent=2))
        _print_heads(metrics, print)
        path = save(model, recipe, training, metrics, args.out)
        print(f"wrote {path} and {path.with_suffix('.json')}")
        notes = _notes(metrics)
        if notes:
            print(notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
