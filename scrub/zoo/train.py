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
    "dla", "dla_subsets", "eta2", "eta2_features", "attn_pos0", "attn_pos0_columns", "p_r2",
    "direct_resample_loss", "readout_search", "roles",
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
PARENS_ROLES = {"count_test": "count", "count_and_starts_open": "count", "horizon_test": "horizon", "prefix_horizon_test": "prefix"}


@torch.no_grad()
def evaluate_parens(model, data: Dataset, resample_n: int = 2048) -> dict[str, Any]:
    """Accuracy and loss of a paren-balance classifier (class at position 0), overall and per
    subset, and the evidence for what each head does (hypotheses/parens.py reads the roles).

    - ``dla[l][h]``: direct logit attribution of head l.h at position 0 (its output through the
      final LayerNorm, with each row's scale, onto ``W_U[:, 1] - W_U[:, 0]``; + means
      "balanced"), averaged over each of ``dla_subsets``.
    - ``eta2[l][h]``: per feature of ``eta2_features``, the share of the variance of the head's
      output vector at position 0 explained by the feature's classes (1: a function of it).
    - ``attn_pos0``: mean attention from position 0 to position 1, to the parentheses, to [PAD].
    - ``p_r2[h]``: R^2 of a linear fit of layer-0 head h's output at position 1 to the open
      proportion of the whole string.
    - ``direct_resample_loss``: class loss with one writer's direct path to the output resampled
      (from a random row, ``"any"``, or a row agreeing on a feature) and every other direct path
      exact; the first ``resample_n`` rows, seed 0 (`scrub.evaluate`).
    - ``readout_search``: the same, on the read-out (the output and the last MLP, which gets the
      same claims): every layer >= 1 head exact into both but one, which carries one feature.
      ``roles`` names, per head, the feature with the lowest loss there.
    """
    logits, cache = model.run_with_cache(
        data.tokens, names_filter=lambda k: k.endswith(("hook_z", "hook_pattern", "ln_final.hook_scale"))
    )
    lg0, y, e = logits[:, 0], data.targets[:, 0], data.extras  # [n, 2], [n]
    ce = F.cross_entropy(lg0, y, reduction="none")  # [n]
    correct = (lg0.argmax(-1) == y).float()
    subsets = {"balanced": e["balanced"], "unbalanced": ~e["balanced"], "count_failures": ~e["count_test"],
               "horizon_only_failures": e["count_test"] & ~e["horizon_test"]}
    out: dict[str, Any] = {"loss": float(ce.mean()), "accuracy": float(correct.mean()), "subsets": {
        k: {"n": int(m.sum()), "loss": float(ce[m].mean()), "accuracy": float(correct[m].mean())} for k, m in subsets.items()}}
    direction = model.ln_final.w * (model.W_U[:, 1] - model.W_U[:, 0])  # [d]
    scale = cache["ln_final.hook_scale"][:, 0, 0]  # [n]
    is_paren, is_pad = data.tokens >= 3, data.tokens == 1  # [n, pos]
    dla, eta2, attn, p_r2 = [], [], [], []
    for layer in range(model.cfg.n_layers):
        res = torch.einsum("nphe,hed->nphd", cache["z", layer], model.W_O[layer])  # [n, pos, head, d]
        res0 = res[:, 0]  # [n, head, d]
        head_dla = ((res0 - res0.mean(-1, keepdim=True)) @ direction) / scale[:, None]  # [n, head]
        dla.append([[float(head_dla[m, h].mean()) for m in subsets.values()] for h in range(model.cfg.n_heads)])
        eta2.append([[_eta2(res0[:, h], e[f]) for f in PARENS_FEATURES] for h in range(model.cfg.n_heads)])
        pat = cache["pattern", layer][:, :, 0]  # [n, head, k]
        attn.append([[float(pat[:, h, 1].mean()), float((pat[:, h] * is_paren).sum(-1).mean()),
                      float((pat[:, h] * is_pad).sum(-1).mean())] for h in range(model.cfg.n_heads)])
        if layer == 0:
            p_r2 = [_r2(res[:, 1, h], e["open_proportion"][:, 0]) for h in range(model.cfg.n_heads)]
    out.update(dla=dla, dla_subsets=list(subsets), eta2=eta2, eta2_features=list(PARENS_FEATURES),
               attn_pos0=attn, attn_pos0_columns=["pos1", "parens", "pad"], p_r2=p_r2)
    out.update(_parens_scrubs(model, data, resample_n))
    out["roles"]["p_head"] = f"Head(0.{max(range(len(p_r2)), key=p_r2.__getitem__)})"
    return _rounded(out)


def _eta2(values: torch.Tensor, feature: torch.Tensor) -> float:
    """Between-class share of the variance of ``values`` [n, d] for the classes of ``feature`` [n]."""
    _, ids = torch.unique(feature, return_inverse=True)
    centred = values - values.mean(0)
    sums = torch.zeros(int(ids.max()) + 1, values.shape[1]).index_add_(0, ids, centred)
    return float(((sums**2).sum(-1) / torch.bincount(ids).float()).sum()) / float((centred**2).sum())


def _r2(x: torch.Tensor, y: torch.Tensor) -> float:
    """R^2 of the least-squares fit of ``y`` [n] by ``x`` [n, d] plus a constant."""
    x1 = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    fit = x1 @ torch.linalg.lstsq(x1, y.double()[:, None]).solution
    return 1.0 - float(((y.double() - fit[:, 0]) ** 2).mean() / y.double().var(unbiased=False))


def _parens_scrubs(model, data: Dataset, n: int) -> dict[str, Any]:
    import scrub
    from scrub import EXACT, MLP, Embed, Feature, Head, Hypothesis

    cfg = model.cfg
    writers = [Embed()] + [c for l in range(cfg.n_layers) for c in (*(Head(l, h) for h in range(cfg.n_heads)), MLP(l))]
    late = [w for w in writers if isinstance(w, Head) and w.layer >= 1]

    def loss(target, feature, readout: bool) -> tuple[float, float, float]:
        h = Hypothesis(f"{target} <- {feature}")
        parents = [h.output()]
        if readout:
            parents.append(h.claim(MLP(cfg.n_layers - 1), EXACT, into=parents[0], name="readout MLP"))
        for w in (late if readout else writers):
            for p in parents:
                if w != target or feature is not None:
                    h.claim(w, Feature.extra(feature) if w == target and feature != "any" else EXACT, into=p,
                            name=f"{w}->{p.name}")
        r = scrub.evaluate(h, model, data, n=n, seeds=1, n_boot=10)
        return r.m_scrub, r.m_model, r.m_base

    direct: dict[str, Any] = {}
    for w in writers:
        feats = ("any",) + (PARENS_FEATURES if w in late else ())
        direct[str(w)] = {f: loss(w, None if f == "any" else f, False)[0] for f in feats}
    _, m_model, m_base = loss(writers[0], None, False)
    search = {str(w): {f: loss(w, f, True)[0] for f in PARENS_ROLES} for w in late}
    roles = {"count_heads": [], "horizon_heads": [], "prefix_heads": []}
    for w in late:
        best = min(PARENS_ROLES, key=search[str(w)].get)
        roles[f"{PARENS_ROLES[best]}_heads"].append(str(w))
    return {"direct_resample_loss": {"model": m_model, "baseline": m_base, **direct},
            "readout_search": {"all_exact": loss(None, None, True)[0], **search}, "roles": roles}


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


def _parens_notes(m: dict[str, Any]) -> str:
    r, search, direct = m["roles"], m["readout_search"], m["direct_resample_loss"]
    heads = sorted(search)
    return (
        f"Measured on {m['dataset']}: accuracy {m['accuracy']:.4f}, loss {m['loss']:.4f}. Roles (the feature "
        f"a head may carry into the read-out with the least loss; read-out = unembedding + last MLP, every "
        f"other layer>=1 head exact, loss with all exact {search['all_exact']:.3f}): count heads "
        f"{', '.join(r['count_heads']) or 'none'}; horizon heads {', '.join(r['horizon_heads']) or 'none'}; "
        f"prefix-horizon heads {', '.join(r['prefix_heads']) or 'none'}; "
        + "; ".join(f"{h}: " + ", ".join(f"{k} {v:.3f}" for k, v in search[h].items()) for h in heads if h != "all_exact")
        + f". p head (layer 0, R^2 with the whole-string open proportion at position 1): {r['p_head']} "
        f"({', '.join(f'{v:.2f}' for v in m['p_r2'])}). Direct path alone resampled (model {direct['model']:.4f}, "
        f"baseline {direct['baseline']:.3f}): "
        + ", ".join(f"{k} {v['any']:.3f}" for k, v in direct.items() if isinstance(v, dict))
        + ". The last MLP's direct path carries the decision: the heads feed it rather than the logits."
    )


def _notes(metrics: dict[str, Any]) -> str:
    if "roles" in metrics:
        return _parens_notes(metrics)
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
    # one metadata key: safetensors orders several in a varying way, and the bytes should repeat
    save_file(tensors, str(weights), metadata={"format": "pt"})
    weights.chmod(0o644)  # safetensors creates the file 0600; shipped weights are world-readable
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


def _load_trained(recipe: Recipe, out_dir: Path):
    from safetensors.torch import load_file

    model = build_model(recipe.config, seed=recipe.seed)
    model.load_state_dict(load_file(str(Path(out_dir) / f"{recipe.name}.safetensors")), strict=False)
    return model.eval(), json.loads((Path(out_dir) / f"{recipe.name}.json").read_text())["training"]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scrub.zoo.train", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"recipes to train: {sorted(RECIPES)}")
    parser.add_argument("--all", action="store_true", help="train every recipe")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's step count")
    parser.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"output folder (default {WEIGHTS_DIR})")
    parser.add_argument(
        "--reevaluate", action="store_true", help="do not train: re-evaluate the weights in --out, keep their training record"
    )
    args = parser.parse_args(argv)
    names = sorted(RECIPES) if args.all else args.names
    if not names:
        parser.error(f"name a recipe ({', '.join(sorted(RECIPES))}) or pass --all")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; recipes: {sorted(RECIPES)}")
    for name in names:
        recipe = RECIPES[name]
        if args.reevaluate:
            model, training = _load_trained(recipe, args.out)
        else:
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
