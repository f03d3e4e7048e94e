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
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from scrub.data import Dataset
from scrub.zoo.measure import evaluate, task_data
from scrub.zoo.record import notes, print_heads, save
from scrub.zoo.recipes import RECIPES, Recipe, build_model, get_recipe

__all__ = ["train", "evaluate", "save", "main", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


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
            batch = task_data(recipe, recipe.batch_size, batch_seed)
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
        print_heads(metrics, print)
        path = save(model, recipe, training, metrics, args.out)
        print(f"wrote {path} and {path.with_suffix('.json')}")
        summary = notes(metrics)
        if summary:
            print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
