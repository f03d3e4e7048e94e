"""The zoo as a plain HuggingFace GPT-2 (`scrub.zoo.load(name, form="hf")`), on both TransformerLens lines.

Under TransformerLens 4 (no HookedTransformer) that form is the default. Checked here:

* on TransformerLens 3, the HF form's logits equal the HookedTransformer's (float32 tolerance) for
  every shipped model (attention-only causal induction-2l, bidirectional 2-class parens-3l), and
  scrubbing with the reference engine gives the same logits and loss recovered on both forms for
  the hypotheses shipped with each model;
* on both lines: the HF form holds exactly the shipped weights (attention-only: all-zero MLPs),
  does the shipped model's task as recorded in its JSON, loads deterministically without touching
  the global RNG; the reference engine runs it (identities: every input EXACT = the clean model);
  every scrub module imports; unsupported settings and forms are refused by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import scrub
import scrub.zoo
from scrub import EXACT, Hypothesis, plan
from scrub.engine import ReferenceEngine
from scrub.errors import ScrubError, UnsupportedModelError
from scrub.metrics import resolve
from scrub.tlcompat import NeedsHookedTransformerError
from scrub.tasks import induction, parens
from scrub.zoo.hf import gpt2_config

from conftest import HOOKED

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-4


def _hypotheses_file(name: str):
    spec = importlib.util.spec_from_file_location(f"tl4_{name}_hypotheses", ROOT / "hypotheses" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hf_models():
    return {name: scrub.zoo.load(name, form="hf") for name in scrub.zoo.available("trained")}


def _task_data(name: str, n: int, seed: int):
    return induction(n=n, seed=seed) if name == "induction-2l" else parens(n=n, seed=seed)


def test_every_scrub_module_imports():
    """The package imports under this TransformerLens (no module-level HookedTransformer import)."""
    names = [m.name for m in pkgutil.walk_packages(scrub.__path__, "scrub.") if not m.name.endswith("__main__")]
    assert "scrub.model.bridge" in names and "scrub.zoo.hf" in names
    for name in names:
        importlib.import_module(name)


def test_default_form_follows_the_transformer_lens_line(hf_models):
    from transformers import GPT2LMHeadModel

    model = scrub.zoo.load("induction-2l")
    if HOOKED:
        from transformer_lens import HookedTransformer

        assert isinstance(model, HookedTransformer)
    else:
        assert isinstance(model, GPT2LMHeadModel)
    assert all(isinstance(m, GPT2LMHeadModel) and not m.training for m in hf_models.values())


def test_hf_form_holds_the_shipped_weights(hf_models):
    from safetensors.torch import load_file

    for name, model in hf_models.items():
        state = load_file(str(Path(scrub.zoo.__file__).parent / "weights" / f"{name}.safetensors"))
        cfg = scrub.zoo.info(name)["config"]
        t = model.transformer
        assert torch.equal(t.wte.weight, state["embed.W_E"]) and torch.equal(t.wpe.weight, state["pos_embed.W_pos"])
        assert torch.equal(model.lm_head.weight, state["unembed.W_U"].T)
        assert torch.equal(model.lm_head.bias, state["unembed.b_U"])
        assert model.lm_head.weight.data_ptr() != t.wte.weight.data_ptr()  # untied
        h = cfg["n_heads"] * cfg["d_head"]
        for i, block in enumerate(t.h):
            w_k = block.attn.c_attn.weight[:, h:2 * h].reshape(cfg["d_model"], cfg["n_heads"], cfg["d_head"])
            assert torch.equal(w_k.permute(1, 0, 2), state[f"blocks.{i}.attn.W_K"])
            assert torch.equal(block.attn.c_attn.bias[2 * h:], state[f"blocks.{i}.attn.b_V"].reshape(-1))
            w_o = block.attn.c_proj.weight.reshape(cfg["n_heads"], cfg["d_head"], cfg["d_model"])
            assert torch.equal(w_o, state[f"blocks.{i}.attn.W_O"])
            mlp = [block.mlp.c_fc.weight, block.mlp.c_fc.bias, block.mlp.c_proj.weight, block.mlp.c_proj.bias]
            if cfg.get("attn_only"):
                assert all(not p.any() for p in mlp)
            else:
                assert torch.equal(block.mlp.c_fc.weight, state[f"blocks.{i}.mlp.W_in"])
        assert all(p.dtype == torch.float32 for p in model.parameters())


def test_hf_form_does_the_recorded_task(hf_models):
    record = scrub.zoo.info("induction-2l")["eval"]
    data = induction(n=1024, seed=12345)
    assert data.fingerprint() == record["fingerprint"]
    with torch.no_grad():
        logits = hf_models["induction-2l"](data.tokens).logits
    loss = F.cross_entropy(logits[data.loss_mask], data.targets[data.loss_mask]).item()
    assert loss == pytest.approx(record["loss_induction_mask"], abs=2e-3)

    record = scrub.zoo.info("parens-3l")["eval"]
    data = parens(n=2048, seed=12345)
    assert data.fingerprint() == record["fingerprint"]
    with torch.no_grad():
        logits = hf_models["parens-3l"](data.tokens).logits[:, 0]  # [n, 2]: bidirectional, read at 0
    accuracy = float((logits.argmax(-1) == data.targets[:, 0]).float().mean())
    assert accuracy == pytest.approx(record["accuracy"], abs=2e-3)


def test_hf_form_attends_both_ways_only_when_bidirectional(hf_models):
    """A change at the last position moves position 0's logits in parens-3l, never in induction-2l."""
    for name, model in hf_models.items():
        data = _task_data(name, 4, 3)
        changed = data.tokens.clone()
        changed[:, -1] = (changed[:, -1] + 1) % int(data.tokens.max() + 1)
        with torch.no_grad():
            a, b = model(data.tokens).logits[:, 0], model(changed).logits[:, 0]
        assert torch.equal(a, b) == (name == "induction-2l"), name


def test_hf_form_loads_deterministically_without_touching_the_global_rng(hf_models):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    again = scrub.zoo.load("parens-3l", form="hf", device="cpu")
    assert torch.equal(torch.rand(3), expected)
    for (k, a), (_, b) in zip(hf_models["parens-3l"].state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_the_reference_engine_reproduces_the_hf_form(hf_models):
    """Every writer EXACT gives the clean logits; the same hypothesis without them does not."""
    model = hf_models["induction-2l"]
    data = induction(n=8, seed=4)
    from scrub import MLP, Embed, Head, PosEmbed

    h = Hypothesis("all exact")
    out = h.output()
    for c in [Embed(), PosEmbed()] + [Head(l, i) for l in range(2) for i in range(4)] + [MLP(0), MLP(1)]:
        h.claim(c, EXACT, into=out)
    logits = ReferenceEngine(model, data).run(plan(h, data, seed=0))
    with torch.no_grad():
        assert torch.allclose(logits, model(data.tokens).logits, atol=ATOL)


def test_refusals():
    with pytest.raises(ScrubError, match="form"):
        scrub.zoo.load("induction-2l", form="tl")
    base = dict(scrub.zoo.info("parens-3l")["config"])
    for setting, change in [
        ("normalization_type", dict(normalization_type="RMS")),
        ("positional_embedding_type", dict(positional_embedding_type="rotary")),
        ("n_heads \\* d_head", dict(d_head=20)),
        ("act_fn", dict(act_fn="silu")),
    ]:
        with pytest.raises(UnsupportedModelError, match=setting):
            gpt2_config(dict(base, **change))


@pytest.mark.tl4_only
def test_the_hooked_form_is_refused_with_the_fix():
    with pytest.raises(NeedsHookedTransformerError, match="transformer-lens<4"):
        scrub.zoo.load("induction-2l", form="hooked")


# ---- on TransformerLens 3: the two forms against each other -----------------------------------------


@pytest.mark.requires_hooked
@pytest.mark.parametrize("name", ["induction-2l", "parens-3l"])
def test_hf_form_has_the_hooked_logits(hf_models, name):
    hooked = scrub.zoo.load(name, form="hooked")
    data = _task_data(name, 64, 11)
    with torch.no_grad():
        ours, theirs = hf_models[name](data.tokens).logits, hooked(data.tokens)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=ATOL, rtol=0)


def _loss_recovered(engine, h, data, seed):
    metric = resolve("cross_entropy")
    base = Hypothesis("output alone")
    base.output()
    s_h, s_b = plan(h, data, seed=seed), plan(base, data, seed=seed)
    batch = data.rows(s_h.reference)
    values = [metric(engine.run(s), batch, None) for s in (s_h, s_b)]  # each [n]
    m_model = metric(engine.clean_logits(s_h.reference), batch, None)
    scrub_, base_ = values
    return engine.run(s_h), float((base_.mean() - scrub_.mean()) / (base_.mean() - m_model.mean()))


@pytest.mark.requires_hooked
@pytest.mark.parametrize("name, n_hyps, n_rows", [
    ("induction-2l", 2, 4),
    ("parens-3l", 3, 16),
])
def test_scrubbing_agrees_on_both_forms(hf_models, name, n_hyps, n_rows):
    """The shipped hypotheses of each zoo model: equal scrubbed logits and loss recovered on both forms."""
    module = _hypotheses_file("induction" if name == "induction-2l" else "parens")
    hyps = module.hypotheses()[:n_hyps]
    data = module.dataset(n=n_rows, seed=2)
    hooked = ReferenceEngine(scrub.zoo.load(name, form="hooked"), data)
    hf = ReferenceEngine(hf_models[name], data)
    for h in hyps:
        a_logits, a_lr = _loss_recovered(hooked, h, data, seed=1)
        b_logits, b_lr = _loss_recovered(hf, h, data, seed=1)
        assert torch.allclose(a_logits, b_logits, atol=ATOL, rtol=0), h.name
        assert b_lr == pytest.approx(a_lr, abs=1e-4), h.name


def test_load_model_serves_zoo_names_in_this_lines_form():
    from scrub.model.loaders import load_model, model_limits

    for name, limits in [("induction-2l", (50, 50, 32)), ("parens-3l", (5, 2, 42))]:
        model = load_model(name)
        assert type(model).__name__ == ("HookedTransformer" if HOOKED else "GPT2LMHeadModel")
        assert model_limits(model) == limits
        assert model_limits(scrub.zoo.load(name, form="hf")) == limits


def test_recorded_heads_hold_in_the_hf_form(hf_models):
    """The previous-token and induction heads named in the JSON, read from the HF attention patterns."""
    data = induction(n=256, seed=7)
    with torch.no_grad():
        patterns = hf_models["induction-2l"](data.tokens, output_attentions=True).attentions  # L x [n, h, q, k]
    heads = scrub.zoo.info("induction-2l")["heads"]
    layer, prev_head = heads["prev_token_head"]
    t = torch.arange(1, data.n_pos)
    prev = patterns[layer][:, :, t, t - 1].mean(dim=(0, 2))  # [head]
    assert int(prev.argmax()) == prev_head and prev[prev_head] > 0.4
    rows, cols = data.loss_mask.nonzero(as_tuple=True)
    src = cols - data.extras["period"][rows] + 1
    for layer, head in heads["induction_heads"]:
        assert patterns[layer][rows, head, cols, src].mean().item() > 0.4, (layer, head)
