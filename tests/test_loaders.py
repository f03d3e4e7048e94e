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


@pytest.mark.requires_hooked
def test_from_hf_matches_the_huggingface_logits(local_gpt2):
    model = from_hf(local_gpt2)
    tokens = torch.randint(0, 23, (3, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(tokens).log_softmax(-1)
        theirs = local_gpt2(tokens).logits.log_softmax(-1)
    assert torch.allclose(ours, theirs, atol=1e-4)


@pytest.mark.requires_hooked
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


@pytest.mark.requires_hooked
def test_from_hf_refuses_other_architectures():
    class Fake:
        config = type("C", (), {"model_type": "llama"})()

    with pytest.raises(UnsupportedModelError, match="GPT-2-architecture"):
        from_hf(Fake())


@pytest.mark.requires_hooked
def test_load_model_serves_zoo_names_without_download():
    model = load_model("induction-2l")
    assert model.cfg.n_layers == 2


# ---- local HuggingFace checkpoints of any supported family (offline) ---------------------------

import json  # noqa: E402

from scrub.errors import CheckpointError  # noqa: E402
from scrub.model.loaders import model_limits  # noqa: E402

from families import make_hf_model  # noqa: E402


def make_hf(family: str, **kwargs):
    """The shared factory's model with a 10-token vocabulary (the tokenizers below have 10 words)."""
    return make_hf_model(family, vocab_size=10, **kwargs)

TOKENS = torch.randint(0, 10, (3, 6), generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("family, dtype", [("llama", torch.bfloat16), ("gpt_neox", torch.float32), ("gemma", torch.float16)])
def test_a_local_checkpoint_loads_offline_in_its_own_dtype(tmp_path, family, dtype):
    original = make_hf(family, seed=2, dtype=dtype)
    original.save_pretrained(tmp_path)
    model = load_model(str(tmp_path), attn_implementation="eager")  # keyword arguments reach from_pretrained
    assert type(model) is type(original)
    assert next(model.parameters()).dtype == dtype
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model(TOKENS).logits, original(TOKENS).logits)


def test_a_loaded_checkpoint_runs_on_the_reference_engine(tmp_path):
    from scrub import EXACT, Hypothesis, plan
    from scrub.engine import ReferenceEngine

    from conftest import random_dataset

    make_hf("qwen2", seed=5).save_pretrained(tmp_path)
    model = load_model(str(tmp_path))
    data = random_dataset(n=8, seed=3)
    h = Hypothesis("h")
    h.claim(Head(1, 0), EXACT, into=h.output())
    logits = ReferenceEngine(model, data).run(plan(h, data, seed=0))
    assert logits.shape == (8, data.n_pos, 10) and torch.isfinite(logits).all()


def test_a_checkpoint_without_config_is_refused(tmp_path):
    make_hf("llama").save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(str(tmp_path))


def test_a_checkpoint_without_weights_is_refused(tmp_path):
    make_hf("llama").save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has none"):
        load_model(str(tmp_path))


def test_a_sharded_checkpoint_missing_a_shard_is_refused(tmp_path):
    make_hf("llama").save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    (tmp_path / shards[-1]).unlink()
    with pytest.raises(CheckpointError, match=shards[-1]):
        load_model(str(tmp_path))


def test_unsupported_families_and_settings_are_refused(tmp_path):
    mixtral = transformers.MixtralForCausalLM(transformers.MixtralConfig(
        vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, num_local_experts=2, num_experts_per_tok=1))
    mixtral.save_pretrained(tmp_path / "moe")
    with pytest.raises(UnsupportedModelError, match="mixture-of-experts"):
        load_model(str(tmp_path / "moe"))
    make_hf("llama").save_pretrained(tmp_path / "odd")
    config = json.loads((tmp_path / "odd" / "config.json").read_text())
    (tmp_path / "odd" / "config.json").write_text(json.dumps(dict(config, model_type="not-a-model")))
    with pytest.raises(UnsupportedModelError, match="not-a-model"):
        load_model(str(tmp_path / "odd"))


def _word_level_tokenizer(n_tokens: int):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(n_tokens)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0")


def test_a_saved_tokenizer_is_checked_against_the_embedding(tmp_path):
    make_hf("llama").save_pretrained(tmp_path / "fits")
    _word_level_tokenizer(10).save_pretrained(tmp_path / "fits")
    model = load_model(str(tmp_path / "fits"))
    assert len(model.tokenizer) == 10
    make_hf("llama").save_pretrained(tmp_path / "too-big")
    _word_level_tokenizer(50).save_pretrained(tmp_path / "too-big")
    with pytest.raises(CheckpointError, match="50 tokens"):
        load_model(str(tmp_path / "too-big"))


def test_a_path_that_is_not_a_directory_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_model(str(tmp_path / "nowhere"))


def test_a_hub_name_offline_is_a_scrub_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="could not be fetched"):
        load_model("no-such-org/no-such-model")


@pytest.mark.requires_hooked
def test_model_limits_of_transformer_lens_and_huggingface_models():
    zoo_model = load_model("induction-2l")
    assert model_limits(zoo_model) == (zoo_model.cfg.d_vocab, zoo_model.cfg.d_vocab_out, zoo_model.cfg.n_ctx)
    hf = make_hf("gpt_neox")
    assert model_limits(hf) == (10, 10, hf.config.max_position_embeddings)
    with pytest.raises(UnsupportedModelError, match="Linear"):
        model_limits(torch.nn.Linear(2, 2))
