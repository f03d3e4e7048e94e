"""Recipes of the zoo: model configurations and the deterministic training runs that produce them.

A `Recipe` names a TransformerLens `HookedTransformerConfig` (as plain keyword arguments, so that
it round-trips through JSON), the task it is trained on, and the optimiser settings.
``python -m scrub.zoo.train NAME`` runs it and writes ``weights/NAME.safetensors`` and
``weights/NAME.json`` (the config kwargs plus training metadata, final losses and head scores).

induction-2l
    A 2-layer attention-only transformer (d_model 64, 4 heads of d_head 16, vocab 50, n_ctx 32,
    LayerNorm, learned positions, causal; 42k float32 parameters) trained for 3000 AdamW steps on
    `scrub.tasks.induction` (variable period 6-16) with the loss on every next-token position. On
    the held-out ``induction(n=1024, seed=12345)`` the loss on the induction positions (the
    dataset's ``loss_mask``: second-copy tokens but the first) is 0.25 nats, while the first-copy
    positions stay at 4.02, about ln 50 = 3.91.

    Heads, measured on that held-out set with ``run_with_cache`` (the JSON's ``"heads"`` holds
    every number; "ablated" is the induction-position loss with the head's ``hook_z`` replaced by
    its mean over the dataset, against 0.25 unablated):

    - previous-token head: **0.3**. Mean attention from t to t-1 is 0.58 over all t >= 1 and 0.79
      over the first copy (the keys the induction heads look up); ablated: 2.52.
      Head 0.0 is a weak second previous-token head (0.30 / 0.39; ablated: 0.31).
      Heads 0.1 and 0.2 are not (0.10 / 0.11 and 0.10 / 0.10; they mostly attend to the current
      position in the prefix and first copy), yet ablating them costs something (0.50 and 0.77),
      so they matter to the task (their role is not established).
    - induction heads: **1.0, 1.1, 1.2, 1.3**, all four. Mean attention from a scored
      second-copy position t to t - L + 1 (the token after the current token's first
      occurrence): 0.69, 0.61, 0.59, 0.63; ablated: 0.61, 0.40, 0.41, 0.41 (no single one is
      essential; the four share the job).

    (Written by hand from ``weights/induction-2l.json`` after training; the JSON is the record.)

parens-3l
    The shape of Redwood's paren-balance checker: 3 layers, 2 heads of d_head 28, d_model 56, ReLU
    MLPs of 56, LayerNorm, learned positions, bidirectional attention (no padding mask), 5 tokens
    in, 2 classes out, read at position 0 (n_ctx 42). Trained on `scrub.tasks.parens` with the
    class loss at position 0 for 12000 AdamW steps of 64 rows (lr 1.5e-3, 200 warm-up steps,
    cosine to 0, betas (0.9, 0.98), weight decay 0.1, one thread; about 14 minutes of CPU on a
    shared 2-core machine). The loss sits near 0.2 (about 90% accuracy: the count test is only
    approximate on long strings) until about step 5500, then drops within 1000 steps; shorter
    schedules tried (1500-8000 steps, constant or cosine, lr 1e-3 to 1e-2) stopped before that.
    On the held-out ``parens(n=2048, seed=12345)``: accuracy 0.9971, loss 0.0086 (balanced rows
    0.9927, count failures 1.0, horizon-only failures 0.9969).

    Heads (JSON ``heads``; hypotheses/parens.py explains them): the last MLP writes the class
    (resampling its direct path alone costs 1.59 nats; any single head's at most 0.08). Into it
    and the logits, head 2.1 carries the count test (with starts-open), heads 1.0 and 1.1 the
    horizon test, head 2.0 the prefix form of the horizon test.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs

__all__ = ["Recipe", "RECIPES", "get_recipe", "build_model"]


def _frozen_dict(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(value)


@attrs.frozen
class Recipe:
    """How to build and train one zoo model.

    Attributes:
        name: the zoo name (``scrub.zoo.load(name)``); also the weights' file stem.
        description: one line for ``available()`` listings and the JSON.
        config: keyword arguments of ``transformer_lens.HookedTransformerConfig`` (JSON-able;
            ``device`` is chosen at load time, not stored).
        task: the name of a generator in `scrub.tasks` that training batches come from.
        task_kwargs: extra keyword arguments for that generator (besides ``n`` and ``seed``).
        loss_positions: ``"all"`` trains on every next-token position (``tokens[:, 1:]``);
            ``"mask"`` trains only on the dataset's ``loss_mask`` positions against ``targets``.
        steps, batch_size, lr, weight_decay, betas: AdamW training settings.
        lr_schedule: ``"constant"`` or ``"cosine"`` (from ``lr`` down to 0 at the last step), after
            ``warmup_steps`` steps of linear warm-up from 0 (0: none).
        seed: seeds the weight initialisation and the generator that draws each step's batch.
        threads: ``torch.set_num_threads`` during training (results are bit-exact per setting).
        eval_n, eval_seed: the held-out dataset the final losses and head scores are measured on.
        eval_task_kwargs: the generator's keyword arguments for that held-out set (``None``: the
            training ``task_kwargs``), so a model may train on a different mix than it is judged on.
    """

    name: str
    description: str
    config: Mapping[str, Any] = attrs.field(converter=_frozen_dict)
    task: str
    task_kwargs: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_dict)
    loss_positions: str = attrs.field(
        default="all", validator=attrs.validators.in_(("all", "mask"))
    )
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.999), converter=tuple)
    lr_schedule: str = attrs.field(default="constant", validator=attrs.validators.in_(("constant", "cosine")))
    warmup_steps: int = 0
    seed: int = 0
    threads: int = 2
    eval_n: int = 1024
    eval_seed: int = 12345
    eval_task_kwargs: Optional[Mapping[str, Any]] = None


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            name="induction-2l",
            description=(
                "2-layer attention-only transformer (d_model 64, 4 heads, LN) trained on "
                "variable-period induction (vocab 50, n_ctx 32)"
            ),
            config=dict(
                model_name="induction-2l",
                n_layers=2,
                d_model=64,
                n_heads=4,
                d_head=16,
                d_vocab=50,
                n_ctx=32,
                attn_only=True,
                normalization_type="LN",
                positional_embedding_type="standard",
                attention_dir="causal",
            ),
            task="induction",
            task_kwargs=dict(vocab=50, n_ctx=32, min_period=6, max_period=16),
            loss_positions="all",
            steps=3000,
            batch_size=64,
            lr=1e-3,
            weight_decay=0.01,
            seed=0,
        ),
        Recipe(
            name="parens-3l",
            description=(
                "3-layer bidirectional classifier (d_model 56, 2 heads of d_head 28, ReLU MLPs 56, LN) "
                "trained to tell balanced parentheses (Redwood's paren-balance checker shape)"
            ),
            config=dict(
                model_name="parens-3l",
                n_layers=3,
                d_model=56,
                n_heads=2,
                d_head=28,
                d_mlp=56,
                act_fn="relu",
                d_vocab=5,
                d_vocab_out=2,
                n_ctx=42,
                normalization_type="LN",
                positional_embedding_type="standard",
                attention_dir="bidirectional",
            ),
            task="parens",
            task_kwargs=dict(max_len=40),
            loss_positions="mask",
            steps=12000,
            batch_size=64,
            lr=1.5e-3,
            weight_decay=0.1,
            betas=(0.9, 0.98),
            lr_schedule="cosine",
            warmup_steps=200,
            seed=0,
            threads=1,
            eval_n=2048,
        ),
    ]
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ScrubError: no recipe has that name (the message lists the ones that exist).
    """
    from scrub.errors import ScrubError

    if name not in RECIPES:
        raise ScrubError(
            f"no zoo recipe named {name!r}; recipes: {sorted(RECIPES)} (add one to "
            f"scrub/zoo/recipes.py to train a new model)"
        )
    return RECIPES[name]


def build_model(config: Mapping[str, Any], *, seed: int = 0, device: Any = "cpu"):
    """A freshly initialised ``HookedTransformer`` for ``config`` (HookedTransformerConfig kwargs).

    Needs TransformerLens 3 (`NeedsHookedTransformerError` under 4; ``scrub.zoo.load`` then
    gives the shipped weights as a HuggingFace GPT-2 instead).

    The initialisation draws from the global torch RNG (TransformerLens offers no generator), so
    it runs inside ``torch.random.fork_rng`` seeded with ``seed``: the caller's global RNG state
    is left as it was, and the same seed gives the same initial weights.
    """
    import torch

    from scrub.tlcompat import require_hooked_transformer

    HookedTransformer = require_hooked_transformer("building or training a zoo model")
    from transformer_lens import HookedTransformerConfig

    kwargs = dict(config)
    kwargs["device"] = str(device)
    kwargs.pop("seed", None)  # HookedTransformerConfig(seed=...) would reseed the global RNGs
    cfg = HookedTransformerConfig(**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HookedTransformer(cfg)
    return model
