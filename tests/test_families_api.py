"""The public API on HuggingFace models: `scrub.evaluate`, `evaluate_many`, `report` and
`load_model` take a plain HF causal LM as they take a HookedTransformer.

Random models predict random targets no better than chance, so the identities are checked with the
KL divergence to the model's own outputs: the model scores 0, the output alone a clearly positive
number, and a hypothesis that claims every component EXACT recovers 100%.
"""

from __future__ import annotations

import pytest
import torch

import scrub
from scrub import EXACT, Hypothesis
from scrub.errors import DatasetError

from conftest import random_dataset
from families import hf_writers, make_hf_model

FAMILIES = ["gpt2", "gpt_neox", "gptj", "llama", "gemma", "gemma2"]  # learned/rotary, parallel, GQA, scaled embedding, post-norms


def every_writer_exact(model) -> Hypothesis:
    h = Hypothesis("every writer exact")
    out = h.output()
    for w in hf_writers(model):
        h.claim(w, EXACT, into=out)
    return h


def output_alone() -> Hypothesis:
    h = Hypothesis("output alone")
    h.output()
    return h


@pytest.fixture(scope="module")
def data():
    return random_dataset(n=12, pos=8, vocab=50, seed=3, name="hf-api")


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluate_on_an_hf_model_gives_the_identities(family, data):
    model = make_hf_model(family, seed=2)
    full, alone = scrub.evaluate_many([every_writer_exact(model), output_alone()], model, data, seeds=2, metric="kl")
    assert full.m_base > 0.05
    assert full.loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert alone.loss_recovered == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_batched_and_reference_engines_agree_through_evaluate(family, data):
    model = make_hf_model(family, seed=4)
    h = Hypothesis("one head, token-resampled inputs")
    head = h.claim(scrub.Head(1, 0), EXACT, into=h.output())
    h.claim(scrub.Embed(), scrub.Feature.token(), into=(head, "q"))
    h.claim(scrub.Embed(), scrub.Feature.prev_token(), into=(head, "k"))
    fast = scrub.evaluate(h, model, data, seeds=2, engine="batched")
    slow = scrub.evaluate(h, model, data, seeds=2, engine="reference")
    assert fast.loss_recovered == pytest.approx(slow.loss_recovered, abs=1e-4)
    assert torch.allclose(fast.rows.scrub, slow.rows.scrub, atol=1e-4)


def test_a_report_runs_on_an_hf_model(data):
    model = make_hf_model("llama", seed=5)
    h = Hypothesis("three heads")
    out = h.output()
    h.claim(scrub.Head(0, 0), EXACT, into=out)
    a = h.claim(scrub.Head(1, 0), EXACT, into=out)
    h.claim(scrub.Head(0, 1), scrub.Feature.token(), into=(a, "v"))
    h.claim(scrub.Head(1, 1), EXACT, into=out)
    rep = scrub.report(h, model, data, seeds=1, metric="kl", n_boot=50)
    assert rep.meta["model"]["name"]
    assert {s.kind for s in rep.subgraphs} >= {"leave-one-out", "alone", "path"}
    assert rep.compensation  # the knock-out check runs through the model view of an HF model
    assert "three heads" in str(rep)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_bfloat16_models_score_in_float32(family, data):
    model = make_hf_model(family, seed=6, dtype=torch.bfloat16)
    r = scrub.evaluate(every_writer_exact(model), model, data, seeds=1, metric="kl")
    assert r.rows.scrub.dtype in (torch.float32, torch.float64)  # scored in float32, never in bfloat16
    assert r.loss_recovered == pytest.approx(1.0, abs=2e-2)


def test_a_dataset_longer_than_the_context_is_refused_before_any_forward_pass(data):
    model = make_hf_model("llama", seed=0)
    long = random_dataset(n=4, pos=model.config.max_position_embeddings + 1, vocab=50, seed=1)
    model.forward = lambda *a, **k: pytest.fail("a forward pass ran")  # type: ignore[method-assign]
    with pytest.raises(DatasetError, match="context"):
        scrub.evaluate(output_alone(), model, long)


def test_gemma2_is_scrubbed_through_evaluate_by_both_engines_alike(data):
    """Post-norms are re-normalised per tree node (docs/post-norms.md), by both engines alike."""
    model = make_hf_model("gemma2", seed=0)
    h = Hypothesis("one head, token-resampled inputs")
    head = h.claim(scrub.Head(1, 0), EXACT, into=h.output())
    h.claim(scrub.Embed(), scrub.Feature.token(), into=(head, "q"))
    h.claim(scrub.Head(0, 1), scrub.Feature.prev_token(), into=(head, "k"))
    fast = scrub.evaluate(h, model, data, seeds=1, n=4, engine="batched", metric="kl")
    slow = scrub.evaluate(h, model, data, seeds=1, n=4, engine="reference", metric="kl")
    assert fast.m_scrub > 0.05  # the scrub moved the logits
    assert fast.loss_recovered == pytest.approx(slow.loss_recovered, abs=1e-4)
    assert torch.allclose(fast.rows.scrub, slow.rows.scrub, atol=1e-4)


def test_load_model_then_evaluate_offline(tmp_path, data):
    model = make_hf_model("qwen2", seed=7)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = scrub.load_model(str(tmp_path / "ckpt"))
    a = scrub.evaluate(every_writer_exact(model), model, data, seeds=1, metric="kl")
    b = scrub.evaluate(every_writer_exact(loaded), loaded, data, seeds=1, metric="kl")
    assert b.m_base == pytest.approx(a.m_base, rel=1e-3)
