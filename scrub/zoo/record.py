"""The record a zoo model ships with: its weights (safetensors) and a JSON file holding the
recipe, the training run, the held-out measurements, the per-head scores and a summary in words."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from scrub.zoo.measure import HEAD_THRESHOLD
from scrub.zoo.recipes import Recipe

__all__ = ["save", "notes", "print_heads", "HEAD_KEYS"]

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


def notes(metrics: dict[str, Any]) -> str:
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
        "notes": notes(metrics),
    }
    meta = out_dir / f"{recipe.name}.json"
    meta.write_text(_dumps(record) + "\n")
    return weights


def print_heads(metrics: dict[str, Any], log: Callable[[str], None]) -> None:
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
