"""Measuring a trained zoo model on its recipe's held-out data: losses, per-head scores and, for
the paren-balance model, the scrubs that name each head's role.

`evaluate` picks the task's measurement; `python -m scrub.zoo.train` writes its output to the
model's JSON record (see `scrub.zoo.record`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

import scrub.tasks
from scrub import api
from scrub.components import MLP, Embed, Head
from scrub.data import EXACT, Dataset, Feature
from scrub.hypothesis import Hypothesis
from scrub.zoo.recipes import Recipe

__all__ = ["evaluate", "evaluate_induction", "evaluate_parens", "task_data", "HEAD_THRESHOLD", "PARENS_FEATURES"]

HEAD_THRESHOLD = 0.3  # an attention score above this marks a head as a previous-token / induction head


def task_data(recipe: Recipe, n: int, seed: int, held_out: bool = False) -> Dataset:
    """``n`` rows of the recipe's task (its held-out settings when ``held_out``)."""
    kwargs = recipe.task_kwargs
    if held_out and recipe.eval_task_kwargs is not None:
        kwargs = recipe.eval_task_kwargs
    return getattr(scrub.tasks, recipe.task)(n=n, seed=seed, **kwargs)


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
        r = api.evaluate(h, model, data, n=n, seeds=1, n_boot=10)
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
    data = task_data(recipe, recipe.eval_n, recipe.eval_seed, held_out=True)
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
