"""The batched engine on HuggingFace causal LMs of every family, against the reference engine.

The reference engine runs the HF model itself with PyTorch module hooks; the batched engine runs
the model view (`ModelView.from_model`). So "batched == reference" checks the view and the
engine's residual decomposition on each family (tiny random models from `tests/families.py`,
every parameter random, few rows):

* property-based: random hypotheses (`test_properties.random_hypotheses`: random heads, MLPs and
  embeddings on q/k/v/in ports, per-example and per-position features, edges restricted to
  positions, claims feeding two ports or two parents) on every family, with and without asked
  positions; under grouped- and multi-query attention the k and v ports of a query head are its
  own; in parallel blocks an MLP is fed only by components of earlier layers;
* identities: complete hypotheses (every port of the expanded claims fed by every writer upstream
  of it, features pinning the datum) reproduce the clean logits, so loss recovered is 100%; the
  output alone gives the model on the root's other rows, the baseline (0%);
* models in bfloat16: the engine runs in the model's dtype, and is as close to the float32
  result as the reference engine in bfloat16 is;
* Gemma-2 (post-norms) is one of the families: both engines re-normalise a layer's attention
  output per tree node (tests/test_post_norms.py checks the formula by hand);
* refusals before any forward pass: ``PosEmbed()`` in rotary models, a head feeding its own
  layer's MLP in parallel blocks, components the model lacks.

Evaluate-level tests (``scrub.evaluate`` on HF models) are left to the api wiring.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scrub import EXACT, MLP, Embed, Feature, Head, Hypothesis, PosEmbed, plan
from scrub.engine import BatchedEngine, ReferenceEngine
from scrub.errors import ComponentError, HypothesisError, ScheduleError
from scrub.hypothesis import ModelShape
from scrub.model.hf_modules import hf_modules

from families import SCRUBBABLE, hf_writers, make_hf_model
from test_properties import CACHE, DATA, ROW, SETTINGS, complete_hypotheses, random_hypotheses, seeds, upstream_in

pytestmark = pytest.mark.usefixtures("one_thread")

REFERENCE = torch.arange(6)  # reference rows: few, so the reference engine stays fast
GQA = [f for f in SCRUBBABLE if f in ("llama", "mistral", "qwen2", "gemma", "gemma_wide_heads", "gemma2")]
PARALLEL = ["gpt_neox", "gptj"]


@lru_cache(maxsize=None)
def model_of(family: str, dtype: torch.dtype = torch.float32):
    return make_hf_model(family, seed=3, dtype=dtype)


@lru_cache(maxsize=None)
def engines(family: str, dtype: torch.dtype = torch.float32) -> tuple[BatchedEngine, ReferenceEngine]:
    model = model_of(family, dtype)
    return BatchedEngine(model, DATA), ReferenceEngine(model, DATA)


def upstream(model):
    """Who may feed whom, from the HF modules (not from the code under test)."""
    return upstream_in(hf_writers(model), model.config.num_hidden_layers, hf_modules(model).parallel)


@torch.no_grad()
def clean_logits(model, rows: torch.Tensor) -> torch.Tensor:
    return model(DATA.tokens[rows]).logits


def close(got: torch.Tensor, want: torch.Tensor, scale: float) -> None:
    """Equal to float32 rounding of logits of size ``scale``."""
    torch.testing.assert_close(got, want, atol=2e-5 * max(1.0, scale), rtol=0)


# ---- batched == reference on random hypotheses, every family --------------------------------


@pytest.mark.parametrize("family", SCRUBBABLE)
@SETTINGS
@given(data=st.data(), seed=seeds())
def test_batched_equals_reference_on_random_hypotheses(family, data, seed):
    model = model_of(family)
    h = data.draw(random_hypotheses(upstream=upstream(model)), label="hypothesis")
    positions = data.draw(st.one_of(st.none(), st.sets(st.integers(0, DATA.n_pos - 1), min_size=1, max_size=3)))
    s = plan(h, DATA, seed, model=model, features=CACHE, reference=REFERENCE)
    batched, reference = engines(family)
    got, want = batched.run(s, positions=positions), reference.run(s, positions=positions)
    assert got.dtype == want.dtype == torch.float32
    close(got, want, float(want.abs().max()))


@pytest.mark.parametrize("family", GQA)
@torch.no_grad()
def test_k_and_v_ports_of_one_query_head_under_grouped_query_attention(family):
    """Head(1, 0)'s k and v read other data while Head(1, 1), which shares its key/value head,
    stays clean: each query head's k/v ports are its own (batched == reference, and the scrub
    moves the logits)."""
    model = model_of(family)
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    h = Hypothesis("gqa")
    out = h.output()
    for w in hf_writers(model):
        if w != Head(1, 0):
            h.claim(w, EXACT, into=out)
    head = h.claim(Head(1, 0), EXACT, into=out)
    h.claim(Embed(), Feature.any(), into=(head, "k"))
    h.claim(MLP(0), Feature.token(), into=(head, "v"))
    h.claim(Head(0, 1), EXACT, into=[(head, "k"), (head, "v")])
    s = plan(h, DATA, 7, model=model, features=CACHE, reference=REFERENCE)
    batched, reference = engines(family)
    got, want = batched.run(s), reference.run(s)
    clean = clean_logits(model, REFERENCE)
    close(got, want, float(want.abs().max()))
    assert (got - clean).abs().max() > 1e-3  # the scrub did something


@pytest.mark.parametrize("family", PARALLEL)
@torch.no_grad()
def test_mlps_in_parallel_blocks_read_their_layers_input(family):
    """MLP(1) expanded with every writer of earlier layers (pinned to its datum) rebuilds its
    input exactly: its layer's heads are not part of it. A head feeding its own layer's MLP is
    refused before any forward pass."""
    model = model_of(family)
    assert hf_modules(model).parallel
    h = Hypothesis("parallel")
    out = h.output()
    for w in hf_writers(model):
        claim = h.claim(w, ROW if w == MLP(1) else EXACT, into=out)
        if w == MLP(1):
            for child in hf_writers(model):
                if isinstance(child, Embed) or getattr(child, "layer", 1) < 1:
                    h.claim(child, ROW, into=claim)
    s = plan(h, DATA, 3, model=model, features=CACHE, reference=REFERENCE)
    mlp = next(n for n in s.nodes() if n.component == MLP(1))
    assert not torch.equal(mlp.other, s.reference)  # the MLP's "other" rows are not the reference
    got = engines(family)[0].run(s)
    clean = clean_logits(model, REFERENCE)
    close(got, clean, float(clean.abs().max()))

    bad = Hypothesis("head into its own layer's MLP")
    m = bad.claim(MLP(1), EXACT, into=bad.output())
    bad.claim(Head(1, 0), EXACT, into=m)
    with pytest.raises(HypothesisError, match="parallel"):
        plan(bad, DATA, 0, model=model)


# ---- identities ----------------------------------------------------------------------------------


def _kl_to_model(logits: torch.Tensor, clean: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean KL(model || scrubbed) over the scored positions of ``rows``, in float32 (random
    models predict random targets no better than chance, so the loss is their own output's)."""
    p, q = clean.float().log_softmax(-1), logits.float().log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1)  # [n, pos]
    mask = DATA.loss_mask[rows].float()
    return (kl * mask).sum() / mask.sum()


@pytest.mark.parametrize("family", SCRUBBABLE)
@torch.no_grad()
def test_the_full_hypothesis_recovers_everything_and_the_output_alone_nothing(family):
    model = model_of(family)
    full = Hypothesis("every component exact on every path")
    out = full.output()
    last = model.config.num_hidden_layers - 1
    for w in hf_writers(model):
        claim = full.claim(w, EXACT, into=out)
        if w in (Head(last, 1), MLP(last)):  # and two of them expanded through every port
            for port in w.ports:
                for child in upstream(model)(w):
                    full.claim(child, EXACT, into=(claim, port))
    alone = Hypothesis("output alone")
    alone.output()
    batched = engines(family)[0]
    s_full = plan(full, DATA, 1, model=model, features=CACHE, reference=REFERENCE)
    s_alone = plan(alone, DATA, 1, model=model, features=CACHE, reference=REFERENCE)
    assert torch.equal(s_full.root.other, s_alone.root.other)  # one baseline for both
    scrubbed, baseline = batched.run_many([s_full, s_alone])
    clean = clean_logits(model, REFERENCE)
    other = clean_logits(model, s_alone.root.other)
    close(scrubbed, clean, float(clean.abs().max()))
    close(baseline, other, float(other.abs().max()))
    kl_base = _kl_to_model(other, clean, REFERENCE)  # the model's own KL is 0
    assert float(kl_base) > 0.05  # the baseline is far from the model
    recovered = 1 - _kl_to_model(scrubbed, clean, REFERENCE) / kl_base
    nothing = 1 - _kl_to_model(baseline, clean, REFERENCE) / kl_base
    assert float(recovered) == pytest.approx(1.0, abs=1e-4)
    assert float(nothing) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("family", SCRUBBABLE)
@SETTINGS
@given(data=st.data(), seed=seeds())
def test_complete_hypotheses_reproduce_the_clean_logits(family, data, seed):
    """Every port of the expanded claims rebuilt from every writer upstream of it, each on its own
    datum pinned to its parent's: the residual the port reads is exactly the clean one."""
    model = model_of(family)
    h = data.draw(complete_hypotheses(upstream=upstream(model)), label="hypothesis")
    s = plan(h, DATA, seed, model=model, features=CACHE, reference=REFERENCE)
    got = engines(family)[0].run(s)
    clean = clean_logits(model, REFERENCE)
    close(got, clean, float(clean.abs().max()))


# ---- the model's own dtype -------------------------------------------------------------------------


def _mixed_hypothesis(model) -> Hypothesis:
    """Per-position features, a position-restricted edge, k/v ports, MLPs two levels down."""
    h = Hypothesis("mixed")
    out = h.output()
    head = h.claim(Head(1, 0), Feature.token(), into=out)
    h.claim(Embed(), EXACT, into=(head, "k"))
    h.claim(MLP(0), Feature.any(), into=(head, "v"), positions={1, 3})
    inner = h.claim(Head(0, 2), Feature.prev_token(), into=(head, "q"))
    h.claim(Embed(), Feature.any(), into=(inner, "v"))
    h.claim(MLP(1), EXACT, into=out)
    return h


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "gemma", "gpt2", "gptj", "gemma2"])
@torch.no_grad()
def test_bfloat16_models_run_in_bfloat16_as_close_as_the_reference(family):
    model = model_of(family, torch.bfloat16)
    s = plan(_mixed_hypothesis(model), DATA, 2, model=model, features=CACHE, reference=REFERENCE)
    batched, reference = engines(family, torch.bfloat16)
    assert batched.view.dtype == torch.bfloat16
    got, want = batched.run(s), reference.run(s)
    assert got.dtype == want.dtype == torch.bfloat16
    exact = engines(family)[1].run(s)  # the same weights' float32 model (drawn in float64, rounded)
    err_batched = float((got.float() - exact).abs().max())
    err_reference = float((want.float() - exact).abs().max())
    scale = float(exact.abs().max())
    assert err_batched <= 2 * err_reference + 4 * torch.finfo(torch.bfloat16).eps * scale
    assert float((got.float() - want.float()).abs().max()) <= 0.1 * scale


# ---- refusals, before any forward pass -----------------------------------------------------------


def _count_forwards(model) -> list:
    calls: list = []
    model.register_forward_pre_hook(lambda mod, args: calls.append(1))
    return calls


@pytest.mark.parametrize("family", [f for f in SCRUBBABLE if f != "gpt2"])
def test_a_pos_embed_claim_in_a_rotary_model_is_refused(family):
    model = model_of(family)
    h = Hypothesis("positions")
    h.claim(PosEmbed(), Feature.any(), into=h.output())
    with pytest.raises(ComponentError, match=r"rotary positions.*rule: .*offender: .*fix: drop the PosEmbed"):
        plan(h, DATA, 0, model=model)
    s = plan(h, DATA, 0)  # planned without the model: the engine refuses it
    calls = _count_forwards(model)
    with pytest.raises(ScheduleError, match="position embedding"):
        BatchedEngine(model, DATA).run(s)
    assert calls == []


def test_components_the_model_lacks_are_refused_before_any_forward_pass():
    model = model_of("llama")
    for component, match in [(Head(0, 9), "head 9"), (MLP(4), "layer 4")]:
        h = Hypothesis("bad")
        h.claim(component, EXACT, into=h.output())
        with pytest.raises(ComponentError):
            plan(h, DATA, 0, model=model)
        with pytest.raises(ScheduleError, match=match):
            BatchedEngine(model, DATA).run(plan(h, DATA, 0))


@pytest.mark.parametrize("family", SCRUBBABLE)
def test_model_shape_of_an_hf_model_reads_its_config_without_weights(family):
    """On the meta device no weight has a value, and the shape still reads: only the config is used."""
    with torch.device("meta"):
        model = make_hf_model(family)
    assert next(model.parameters()).is_meta
    shape = ModelShape.of(model)
    c = model.config
    assert (shape.n_layers, shape.n_heads, shape.n_ctx) == (
        c.num_hidden_layers, c.num_attention_heads, c.max_position_embeddings
    )
    assert not shape.attn_only
    assert shape.parallel_blocks == (family in PARALLEL) == hf_modules(model).parallel
    assert shape.has_pos_embed == (family == "gpt2")
    assert shape.positional == ("standard" if family == "gpt2" else "rotary")


def test_model_shape_refuses_what_it_cannot_read():
    with pytest.raises(HypothesisError, match="rule: .*offender: cannot read the shape of Linear.*fix: "):
        ModelShape.of(torch.nn.Linear(2, 2))
