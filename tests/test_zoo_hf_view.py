"""The zoo's HuggingFace form (`scrub.zoo.load(name, form="hf")`) read by the model view: the view's
logits equal the HF model's, the bidirectional parentheses model included."""

from __future__ import annotations

import pytest
import torch

import scrub
from scrub.model import ModelView


@pytest.mark.parametrize("name, data", [
    ("induction-2l", lambda: scrub.tasks.induction(n=16, seed=0)),
    ("parens-3l", lambda: scrub.tasks.parens(n=16, seed=0)),
])
@torch.no_grad()
def test_the_view_of_the_zoo_hf_form_equals_its_logits(name, data):
    model = scrub.zoo.load(name, form="hf")
    view = ModelView.from_model(model)
    tokens = data().tokens
    assert view.config.causal == bool(getattr(model.config, "is_causal", True))
    want = model(tokens).logits
    got = view.forward(tokens)
    assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
