"""The compensation check's knock-outs (`scrub.reporting.ablation`) on every HuggingFace family,
against the HF model itself: with nothing knocked out the logits are the model's, and knocking an
MLP out equals a forward hook that replaces that MLP module's output with its output on the
random rows (parallel blocks included: there the MLP reads the layer's input, not the stream after
the heads)."""

from __future__ import annotations

import pytest
import torch

from families import FAMILIES, make_hf_model, random_tokens
from scrub import MLP
from scrub.model import ModelView
from scrub.model.hf_modules import hf_modules
from scrub.reporting.ablation import ablated_logits

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp_written(model, layer: int):
    """The module whose output is what layer ``layer``'s MLP adds to the stream."""
    mods = hf_modules(model).layers[layer]
    return mods.mlp_out if mods.mlp_out is not None else mods.mlp


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_knock_outs_equal_hooks_on_the_model(family):
    model = make_hf_model(family, seed=3)
    view = ModelView.from_model(model)
    tokens, other = random_tokens(model, 3, 8, seed=1), random_tokens(model, 3, 8, seed=2)
    random = view.clean_pass(other)
    torch.testing.assert_close(ablated_logits(view, tokens, random), model(input_ids=tokens).logits,
                               rtol=1e-4, atol=1e-4)
    layer = 0
    module = _mlp_written(model, layer)
    seen = {}
    handle = module.register_forward_hook(lambda mod, args, out: seen.__setitem__("out", out))
    try:
        model(input_ids=other)
    finally:
        handle.remove()
    handle = module.register_forward_hook(lambda mod, args, out: seen["out"])
    try:
        want = model(input_ids=tokens).logits
    finally:
        handle.remove()
    torch.testing.assert_close(ablated_logits(view, tokens, random, knock_out=MLP(layer)), want, rtol=1e-4, atol=1e-4)
