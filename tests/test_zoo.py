"""Tests of the model zoo: loading the shipped weights, what the shipped model does, training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import scrub.zoo
from scrub.errors import ScrubError
from scrub.tasks import induction

WEIGHTS = Path(scrub.zoo.__file__).resolve().parent / "weights"


@pytest.fixture(scope="module")
def model():
    return scrub.zoo.load("induction-2l")


@pytest.fixture(scope="module")
def data():
    return induction(n=512, seed=7)


@pytest.fixture(scope="module")
def run(model, data):
    with torch.no_grad():
        return model.run_with_cache(data.tokens, names_filter=lambda k: k.endswith("hook_pattern"))


def _first_copy_mask(data):
    pos = torch.arange(data.n_pos)[None, :]
    second = data.extras["second_start"][:, None]
    return (pos >= second - data.extras["period"][:, None]) & (pos <= second - 2)


def test_available():
    names = scrub.zoo.available()
    assert "induction-2l" in names
    assert names == sorted(names)


@pytest.mark.requires_hooked
def test_load(model):
    from transformer_lens import HookedTransformer

    assert isinstance(model, HookedTransformer)
    assert not model.training
    cfg = model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_vocab, cfg.n_ctx) == (2, 64, 4, 16, 50, 32)
    assert cfg.attn_only and cfg.normalization_type == "LN"
    assert cfg.positional_embedding_type == "standard" and cfg.attention_dir == "causal"
    assert next(model.parameters()).device.type == "cpu"
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.requires_hooked
def test_load_matches_the_weights_file(model):
    from safetensors.torch import load_file

    state = load_file(str(WEIGHTS / "induction-2l.safetensors"))
    params = dict(model.named_parameters())
    assert set(state) == set(params)
    for key, value in state.items():
        assert torch.equal(params[key].detach(), value), key
    assert (WEIGHTS / "induction-2l.safetensors").stat().st_size < 1_000_000


@pytest.mark.requires_hooked
def test_load_is_deterministic_and_leaves_global_rng_alone(model):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    again = scrub.zoo.load("induction-2l", device="cpu")
    assert torch.equal(torch.rand(3), expected)
    for (k, a), (_, b) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), k


def test_unknown_name_lists_available():
    with pytest.raises(ScrubError, match="induction-2l") as info:
        scrub.zoo.load("no-such-model")
    assert "no-such-model" in str(info.value)
    with pytest.raises(ScrubError):
        scrub.zoo.load(None)
    with pytest.raises(ScrubError):
        scrub.zoo.info("../weights/induction-2l")


@pytest.mark.requires_hooked
def test_shipped_model_does_induction(run, data):
    logits, _ = run
    induction_loss = F.cross_entropy(logits[data.loss_mask], data.targets[data.loss_mask]).item()
    first = _first_copy_mask(data)
    first_copy_loss = F.cross_entropy(logits[first], data.targets[first]).item()
    assert induction_loss < 1.0, induction_loss
    assert first_copy_loss > 3.0, first_copy_loss
    assert abs(first_copy_loss - math.log(50)) < 0.6


@pytest.mark.requires_hooked
def test_recorded_heads_hold(run, data):
    """The heads named in the JSON (which hypotheses rely on) behave as recorded."""
    _, cache = run
    heads = scrub.zoo.info("induction-2l")["heads"]
    layer, prev_head = heads["prev_token_head"]
    assert layer == 0
    pattern0 = cache["pattern", 0]  # [n, head, q, k]
    t = torch.arange(1, data.n_pos)
    prev = pattern0[:, :, t, t - 1].mean(dim=(0, 2))  # [head]
    assert int(prev.argmax()) == prev_head
    assert prev[prev_head] > 0.4

    rows, cols = data.loss_mask.nonzero(as_tuple=True)
    src = cols - data.extras["period"][rows] + 1
    assert heads["induction_heads"], "the recipe should have produced induction heads"
    for layer, head in heads["induction_heads"]:
        score = cache["pattern", layer][rows, head, cols, src].mean().item()
        assert score > 0.4, (layer, head, score)


def test_json_record():
    record = json.loads((WEIGHTS / "induction-2l.json").read_text())
    assert {"kind": "trained", **record} == scrub.zoo.info("induction-2l")
    assert record["config"]["d_vocab"] == 50
    assert record["training"]["steps"] >= 1000
    assert record["eval"]["loss_induction_mask"] < 0.6
    assert record["eval"]["loss_first_copy"] > 3.0
    assert "Previous-token head" in record["notes"]


@pytest.mark.slow
def test_training_is_deterministic_and_learns():
    from scrub.zoo.train import train

    model_a, rec_a = train("induction-2l", steps=300, log=None, log_every=50)
    model_b, rec_b = train("induction-2l", steps=300, log=None, log_every=50)
    for (k, a), (_, b) in zip(model_a.named_parameters(), model_b.named_parameters()):
        assert torch.equal(a, b), k
    assert rec_a["loss_curve"] == rec_b["loss_curve"]
    curve = [loss for _, loss in rec_a["loss_curve"]]
    assert curve[-1] < curve[0]
    model_c, _ = train("induction-2l", steps=20, seed=1, log=None)
    model_d, _ = train("induction-2l", steps=20, seed=0, log=None)
    assert not torch.equal(model_c.embed.W_E, model_d.embed.W_E)


@pytest.mark.slow
def test_cli_writes_loadable_weights(tmp_path, capsys):
    from safetensors.torch import load_file

    from scrub.zoo.recipes import build_model
    from scrub.zoo.train import main

    assert main(["induction-2l", "--steps", "20", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "induction-2l.json").read_text())
    assert record["training"]["steps"] == 20
    assert {"eval", "heads", "notes", "config"} <= set(record)
    model = build_model(record["config"])
    missing, unexpected = model.load_state_dict(load_file(str(tmp_path / "induction-2l.safetensors")), strict=False)
    assert not unexpected and all(k.endswith(("mask", "IGNORE")) for k in missing)
    assert "step" in capsys.readouterr().out


def test_known_circuit_models_are_in_the_zoo():
    """The hand-set models of `scrub.zoo.known` are zoo models too: listed, described, loadable."""
    from scrub.zoo import known

    assert scrub.zoo.available("known") == known.available() == ["induction-known", "lookup-known"]
    assert "induction-2l" in scrub.zoo.available("trained")
    assert not set(scrub.zoo.available("trained")) & set(scrub.zoo.available("known"))
    assert scrub.zoo.available() == sorted(scrub.zoo.available("trained") + scrub.zoo.available("known"))
    record = scrub.zoo.info("induction-known")
    assert record["kind"] == "known" and record["description"] == known.get("induction-known").description
    assert len(record["circuit"]) == len(known.circuit("induction-known"))
    assert "Head(0.0) -> Head(1.0).k" in record["circuit"]
    assert scrub.zoo.info("induction-2l")["kind"] == "trained"
    with pytest.raises(ScrubError, match="choose one of"):
        scrub.zoo.available("hand-set")


@pytest.mark.requires_hooked
def test_known_circuit_model_loads_through_the_zoo_and_load_model():
    from scrub.zoo import known

    model = scrub.zoo.load("lookup-known")
    again = scrub.load_model("lookup-known")
    direct = known.load("lookup-known")
    for (k, a), (_, b), (_, c) in zip(model.named_parameters(), again.named_parameters(), direct.named_parameters()):
        assert torch.equal(a, b) and torch.equal(a, c), k


def test_known_circuit_model_has_no_hf_form():
    from scrub.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="form='hf'"):
        scrub.zoo.load("induction-known", form="hf")
