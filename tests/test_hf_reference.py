"""The reference engine on plain HuggingFace causal LMs (PyTorch module hooks), every family.

(a) independent cross-check without the model view: a random HF GPT-2 converted with `from_hf`
    into a HookedTransformer; the reference engine with TransformerLens hooks on it and with HF
    module hooks on the HF model give equal logits on random hypotheses;
(b) per family: identities (every input EXACT reproduces the clean logits; the output alone is
    the model on the root's other datum), the decomposition (head outputs + bias = attention
    output; component outputs + biases = the residual the output reads), and port patches (a
    zero delta changes nothing, a nonzero one changes the component; q/k/v patched together
    equal the residual patched before the layer's input norm), and complete hypotheses (every port
    of expanded heads and MLPs fed by every writer upstream of it) reproduce the clean logits,
    which holds only if each port's residual is exactly the sum of the writers upstream of it
    (in GPT-J and parallel GPT-NeoX blocks, the MLP's upstream excludes its layer's heads);
(c) refusals: other model types, unsupported families and settings, components the model lacks.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from scrub import EXACT, MLP, Embed, Feature, Head, Hypothesis, Output, PosEmbed, plan
from scrub.engine import ReferenceEngine
from scrub.engine.backends import backend_for
from scrub.errors import ScheduleError, UnsupportedModelError
from scrub.model.hf_modules import hf_modules

from conftest import random_dataset
from families import SCRUBBABLE, hf_writers, make_hf_model

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-4
DATA = random_dataset(n=12, seed=5, name="hf")


@pytest.fixture(scope="module", params=SCRUBBABLE)
def family_model(request):
    return request.param, make_hf_model(request.param, seed=3)


def exact_everything(model) -> Hypothesis:
    h = Hypothesis("every input exact")
    out = h.output()
    for component in hf_writers(model):
        h.claim(component, EXACT, into=out)
    return h


# ---- (a) cross-check against TransformerLens hooks on the converted model ------------------------


@pytest.fixture(scope="module")
def gpt2_pair():
    from scrub.model.loaders import from_hf

    hf = make_hf_model("gpt2", seed=7)
    return hf, from_hf(hf)


@pytest.mark.requires_hooked
def test_converted_gpt2_has_the_same_logits(gpt2_pair):
    hf, tl = gpt2_pair
    with torch.no_grad():
        assert torch.allclose(hf(DATA.tokens).logits, tl(DATA.tokens), atol=ATOL)


from test_properties import CACHE as PROP_CACHE  # noqa: E402  (the random-hypothesis strategies)
from test_properties import DATA as PROP_DATA  # noqa: E402
from test_properties import SETTINGS, random_hypotheses, seeds  # noqa: E402


@pytest.mark.requires_hooked
@SETTINGS
@given(h=random_hypotheses(), seed=seeds())
def test_hf_hooks_equal_transformer_lens_hooks_on_random_hypotheses(gpt2_pair, h, seed):
    hf, tl = gpt2_pair
    s = plan(h, PROP_DATA, seed, features=PROP_CACHE)
    ours = ReferenceEngine(hf, PROP_DATA).run(s)
    theirs = ReferenceEngine(tl, PROP_DATA).run(s)
    assert torch.allclose(ours, theirs, atol=ATOL)


# ---- (b) every family ----------------------------------------------------------------------------


@torch.no_grad()
def test_every_input_exact_reproduces_the_clean_logits(family_model):
    _, model = family_model
    s = plan(exact_everything(model), DATA, seed=1)
    got = ReferenceEngine(model, DATA).run(s)
    clean = model(DATA.tokens[s.reference]).logits
    assert torch.allclose(got, clean, atol=ATOL)
    # the root's other rows differ from the reference rows, so the identity is not trivial
    assert not torch.allclose(model(DATA.tokens[s.root.other]).logits, clean, atol=1e-2)


ROW = Feature("row", lambda d: torch.arange(len(d), device=d.device))  # pins a child's datum to its parent's


def _upstream(component, writers: list, parallel: bool) -> list:
    """Writers whose outputs sum (with the biases) to the residual ``component``'s ports read."""
    from scrub.components import stage

    n_layers = max(getattr(w, "layer", 0) for w in writers) + 1
    ups = [w for w in writers if stage(w, n_layers) < stage(component, n_layers)]
    if parallel and isinstance(component, MLP):  # the MLP reads the residual its layer's attention reads
        ups = [w for w in ups if not (isinstance(w, Head) and w.layer == component.layer)]
    return ups


def complete_hypothesis(model) -> Hypothesis:
    """Output <- every writer; Head(last, 1) (its q, k, v), MLP(last) and, under Head(last, 1)'s q,
    MLP(0) expanded, each port fed by every writer upstream of it (so every port input is rebuilt
    from scrubbed pieces on a different "other" datum; the result must still be the clean logits)."""
    writers = hf_writers(model)
    parallel = hf_modules(model).parallel
    last = model.config.num_hidden_layers - 1
    h = Hypothesis("complete")
    out = h.output()

    def expand(claim, ports, deeper=None) -> None:
        for port in ports:
            for w in _upstream(claim.component, writers, parallel):
                if deeper is not None and (w, port) == deeper[:2]:
                    child = h.claim(w, ROW, into=(claim, port))
                    expand(child, w.ports)
                else:
                    h.claim(w, ROW, into=(claim, port))

    for w in writers:
        claim = h.claim(w, ROW if w.ports else EXACT, into=out)
        if w == Head(last, 1):
            expand(claim, "qkv", deeper=(MLP(0), "q"))
        elif w == MLP(last):
            expand(claim, ("in",))
    return h


@torch.no_grad()
def test_complete_hypotheses_rebuild_every_port_input_exactly(family_model):
    """Each expanded port reads resid(other) - sum_k out_k(other) + sum_k out_k(reference): equal to
    resid(reference) only if the port's residual is exactly the sum of the writers upstream of it."""
    _, model = family_model
    h = complete_hypothesis(model)
    s = plan(h, DATA, seed=4)
    expanded = [n for n in s.nodes() if n.children and not n.is_root]
    assert len(expanded) == 3 and all(not torch.equal(n.other, s.reference) for n in expanded)
    got = ReferenceEngine(model, DATA).run(s)
    assert torch.allclose(got, model(DATA.tokens[s.reference]).logits, atol=ATOL)


@pytest.mark.parametrize("family, dtype", [("llama", torch.bfloat16), ("gpt2", torch.float16), ("gemma", torch.bfloat16)])
@torch.no_grad()
def test_models_run_in_their_own_dtype(family, dtype):
    """Half-precision models stay in their dtype; the identity holds to that dtype's rounding."""
    model = make_hf_model(family, seed=3, dtype=dtype)
    s = plan(exact_everything(model), DATA, seed=1)
    got = ReferenceEngine(model, DATA).run(s)
    clean = model(DATA.tokens[s.reference]).logits
    assert got.dtype == dtype
    tolerance = 4 * torch.finfo(dtype).eps * float(clean.abs().max())
    assert float((got.float() - clean.float()).abs().max()) <= tolerance
    assert float((model(DATA.tokens[s.root.other]).logits.float() - clean.float()).abs().max()) > 10 * tolerance


@torch.no_grad()
def test_the_output_alone_is_the_model_on_the_other_datum(family_model):
    _, model = family_model
    h = Hypothesis("output alone")
    h.output()
    s = plan(h, DATA, seed=2)
    got = ReferenceEngine(model, DATA).run(s)
    assert torch.allclose(got, model(DATA.tokens[s.root.other]).logits, atol=ATOL)


def _attention_and_final_residual(model, tokens):
    """The output projections' outputs and biases, and the final norm's input, by plain hooks."""
    m = hf_modules(model)
    attn_out, final = {}, {}
    handles = [layer.out_proj.register_forward_hook(lambda mod, a, v, i=i: attn_out.__setitem__(i, v))
               for i, layer in enumerate(m.layers)]
    handles.append(m.final_norm.register_forward_pre_hook(lambda mod, a: final.__setitem__("resid", a[0])))
    try:
        model(input_ids=tokens)
    finally:
        for handle in handles:
            handle.remove()
    biases = [layer.out_proj.bias for layer in m.layers]
    return attn_out, biases, final["resid"]


@torch.no_grad()
def test_component_outputs_decompose_the_residual_stream(family_model):
    _, model = family_model
    tokens = DATA.tokens[:5]
    backend = backend_for(model)
    writers = hf_writers(model)
    outputs = backend.run(tokens, reads=writers)
    attn_out, biases, resid = _attention_and_final_residual(model, tokens)
    total = torch.zeros_like(resid)
    for layer in range(backend.n_layers):
        heads = [outputs[c] for c in writers if isinstance(c, Head) and c.layer == layer]
        bias = biases[layer] if biases[layer] is not None else torch.zeros(resid.shape[-1])
        assert torch.allclose(sum(heads) + bias, attn_out[layer], atol=ATOL)
        post = hf_modules(model).layers[layer].attn_out_norm  # Gemma-2: the attention writes N(heads + bias)
        total = total + (sum(heads) + bias if post is None else post(sum(heads) + bias))
    total = total + sum(outputs[c] for c in writers if not isinstance(c, Head))
    assert torch.allclose(total, resid, atol=ATOL)
    # each head contributes something of its own (no slice is empty or duplicated)
    heads = [outputs[c] for c in writers if isinstance(c, Head)]
    assert all(h.abs().max() > 1e-3 for h in heads)
    assert not torch.allclose(heads[0], heads[1], atol=1e-3)


def _ports(model) -> list:
    last = model.config.num_hidden_layers - 1
    return [(Head(last, 1), "q"), (Head(last, 1), "k"), (Head(last, 1), "v"), (MLP(0), "in"), (MLP(last), "in"),
            (Output(), "in")]


@torch.no_grad()
def test_a_zero_delta_changes_nothing_and_a_nonzero_one_changes_the_component(family_model):
    _, model = family_model
    tokens = DATA.tokens[:4]
    backend = backend_for(model)
    g = torch.Generator().manual_seed(0)
    for component, port in _ports(model):
        clean = backend.run(tokens, reads=[component])[component]
        shape = (*tokens.shape, model.config.hidden_size)
        zero = backend.run(tokens, reads=[component], patches=[(component, port, torch.zeros(shape))])[component]
        assert torch.allclose(zero, clean, atol=1e-6), (component, port)
        delta = torch.randn(shape, generator=g)
        moved = backend.run(tokens, reads=[component], patches=[(component, port, delta)])[component]
        assert not torch.allclose(moved, clean, atol=1e-3), (component, port)


@torch.no_grad()
def test_q_k_and_v_patched_together_equal_the_residual_patched_before_the_norm(family_model):
    """Independent of the per-port splicing: a delta on all three ports is a delta on the layer's input."""
    _, model = family_model
    tokens = DATA.tokens[:4]
    backend = backend_for(model)
    last = model.config.num_hidden_layers - 1
    head = Head(last, 2)
    delta = torch.randn((*tokens.shape, model.config.hidden_size), generator=torch.Generator().manual_seed(1))
    ours = backend.run(tokens, reads=[head], patches=[(head, p, delta) for p in "qkv"])[head]
    norm = hf_modules(model).layers[last].attn_norm
    handle = norm.register_forward_pre_hook(lambda mod, a: (a[0] + delta,))
    try:
        theirs = backend.run(tokens, reads=[head])[head]
    finally:
        handle.remove()
    assert torch.allclose(ours, theirs, atol=ATOL)


@torch.no_grad()
def test_a_query_patch_moves_only_its_positions_and_a_key_patch_only_later_ones(family_model):
    """Distinguishes the ports of a fused projection: q is read per query, k and v by later queries."""
    _, model = family_model
    tokens = DATA.tokens[:4]
    backend = backend_for(model)
    head = Head(0, 1)
    clean = backend.run(tokens, reads=[head])[head]
    delta = torch.zeros((*tokens.shape, model.config.hidden_size))
    delta[:, 3] = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    for port, moved_at in [("q", [3]), ("k", [3, 4, 5, 6]), ("v", [3, 4, 5, 6])]:
        got = backend.run(tokens, reads=[head], patches=[(head, port, delta)])[head]
        changed = [t for t in range(tokens.shape[1]) if not torch.allclose(got[:, t], clean[:, t], atol=1e-6)]
        window = getattr(model.config, "sliding_window", None)
        layer_types = getattr(model.config, "layer_types", None)  # Qwen2: sliding from max_window_layers on
        if layer_types is not None and layer_types[0] != "sliding_attention":
            window = None
        if port != "q" and window:
            moved_at = [t for t in moved_at if t - 3 < window]
        assert changed == moved_at, (port, changed)


def test_the_neox_splice_matches_the_modelling_code_layout():
    """GPT-NeoX's fused output is per head [q_h | k_h | v_h]: splicing one port moves only that chunk."""
    model = make_hf_model("gpt_neox", seed=4)
    backend = backend_for(model)
    m = backend.modules
    value = torch.randn(2, 5, 3 * m.n_heads * m.d_head, generator=torch.Generator().manual_seed(3))
    patched = torch.randn(value.shape, generator=torch.Generator().manual_seed(4))

    def chunks(x):  # the modelling code: view(..., -1, 3 * head_size).transpose(1, 2).chunk(3, dim=-1)
        return x.view(2, 5, m.n_heads, 3 * m.d_head).transpose(1, 2).chunk(3, dim=-1)

    for index, port in enumerate("qkv"):
        spliced = chunks(backend._splicer(port)(value, patched))
        for j in range(3):
            expected = chunks(patched if j == index else value)[j]
            assert torch.equal(spliced[j], expected)


# ---- (c) refusals --------------------------------------------------------------------------------


def test_other_model_types_are_refused_by_name():
    with pytest.raises(UnsupportedModelError, match="Linear"):
        ReferenceEngine(torch.nn.Linear(2, 2), DATA)


def test_a_model_in_training_mode_is_refused():
    model = make_hf_model("gpt2").train()
    with pytest.raises(UnsupportedModelError, match=r"model.eval\(\)"):
        ReferenceEngine(model, DATA)


def test_mixture_of_experts_is_refused():
    model = transformers.MixtralForCausalLM(transformers.MixtralConfig(
        vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, num_local_experts=2, num_experts_per_tok=1))
    with pytest.raises(UnsupportedModelError, match="mixture-of-experts"):
        ReferenceEngine(model, DATA)


def test_components_the_model_lacks_are_refused_before_any_forward_pass():
    model = make_hf_model("llama", seed=1)
    calls = []
    model.register_forward_pre_hook(lambda mod, a: calls.append(1))
    for component, match in [(Head(0, 9), "head 9"), (MLP(4), "layer 4"), (PosEmbed(), "position embedding")]:
        h = Hypothesis("bad")
        h.claim(component, EXACT, into=h.output())
        with pytest.raises(ScheduleError, match=match):
            ReferenceEngine(model, DATA).run(plan(h, DATA, seed=0))
    assert calls == []


@pytest.mark.requires_hooked
def test_the_backend_follows_the_model_type(gpt2_pair):
    hf, tl = gpt2_pair
    assert type(backend_for(hf)).__name__ == "HuggingFaceBackend"
    assert type(backend_for(tl)).__name__ == "TransformerLensBackend"
    assert hf_modules(hf).n_heads == hf.config.n_head == 4 and backend_for(make_hf_model("llama")).modules.n_kv_heads == 2
    assert Embed() in backend_for(hf).run(DATA.tokens[:2], reads=[Embed()])


@pytest.mark.requires_hooked
def test_a_transformer_bridge_runs_on_the_transformer_lens_backend(gpt2_pair):
    """A TransformerBridge (here TransformerLens 3.9's) over a copy of the HF GPT-2: TL hooks == HF hooks."""
    import copy

    sources = pytest.importorskip("transformer_lens.model_bridge.sources")
    hf, _ = gpt2_pair
    bridge = sources.build_bridge_from_module(copy.deepcopy(hf), "GPT2LMHeadModel", hf_config=hf.config).eval()
    assert type(backend_for(bridge)).__name__ == "TransformerLensBackend"
    h = Hypothesis("bridge")
    out = h.output()
    a = h.claim(Head(1, 0), EXACT, into=out)
    h.claim(Embed(), Feature.any(), into=(a, "q"))
    h.claim(MLP(0), EXACT, into=(a, "v"))
    m = h.claim(MLP(1), EXACT, into=out)
    h.claim(PosEmbed(), Feature.any(), into=m)
    data = random_dataset(n=4, seed=6)
    s = plan(h, data, seed=3)
    ours = ReferenceEngine(bridge, data).run(s)
    assert torch.allclose(ours, ReferenceEngine(hf, data).run(s), atol=ATOL)
    with torch.no_grad():
        assert not torch.allclose(ours, hf(data.tokens).logits, atol=1e-2)  # the scrub changed something
    assert not bridge.cfg.use_attn_result  # the per-head settings are restored after the run
