"""Loading paths: zoo names, local HuggingFace GPT-2-architecture models (offline)."""

import pytest
import torch

import scrub
from scrub import EXACT, Head, Hypothesis
from scrub.errors import UnsupportedModelError
from scrub.model.loaders import from_hf, load_model

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def local_gpt2(tmp_path_factory):
    """A tiny random GPT-2 saved to and loaded back from a local directory (no hub)."""
    config = transformers.GPT2Config(vocab_size=23, n_positions=12, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    path = tmp_path_factory.mktemp("gpt2-local")
    hf.save_pretrained(path)
    return transformers.GPT2LMHeadModel.from_pretrained(path).eval()


def test_from_hf_matches_the_huggingface_logits(local_gpt2):
    model = from_hf(local_gpt2)
    tokens = torch.randint(0, 23, (3, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(tokens).log_softmax(-1)
        theirs = local_gpt2(tokens).logits.log_softmax(-1)
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_a_converted_model_scrubs_end_to_end(local_gpt2):
    model = from_hf(local_gpt2, fold_ln=True)
    tokens = torch.randint(0, 23, (16, 8), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, -1] = False
    data = scrub.Dataset(tokens, tokens.roll(-1, 1), mask)
    h = Hypothesis("h")
    h.claim(Head(1, 0), EXACT, into=h.output())
    batched = scrub.evaluate(h, model, data)
    reference = scrub.evaluate(h, model, data, engine="reference")
    assert batched.m_scrub == pytest.approx(reference.m_scrub, abs=1e-4)


def test_from_hf_refuses_other_architectures():
    class Fake:
        config = type("C", (), {"model_type": "llama"})()

    with pytest.raises(UnsupportedModelError, match="GPT-2-architecture"):
        from_hf(Fake())


def test_load_model_serves_zoo_names_without_download():
    model = load_model("induction-2l")
    assert model.cfg.n_layers == 2
