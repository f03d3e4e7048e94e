"""TransformerLens 4: a ``TransformerBridge`` where a model goes (these tests run only on the 4.x line).

The bridge is booted offline, ``TransformerBridge.boot_transformers(local_dir)``, from a random
GPT-2 saved with ``save_pretrained`` next to a tiny word-level tokenizer. Checked:

* the bridge's logits are the HF model's; its hooks fire for scrub's TransformerLens backend
  without ``enable_compatibility_mode()`` (which would process the weights): the reference engine
  on the bridge equals the reference engine on the HF model (PyTorch module hooks, an independent
  implementation) on random hypotheses and on random deltas at every port; per-head settings are
  restored after a run; ``evaluate(engine="reference")`` takes the bridge;
* `hf_model_of_bridge` gives a plain HF model with the bridge's logits and the bridge's tensors
  (shared), which the HF hook backend runs; it refuses what it cannot unwrap;
* code paths that need a HookedTransformer refuse with `NeedsHookedTransformerError` naming the fix.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given

import scrub
from scrub import EXACT, MLP, Embed, Feature, Head, Hypothesis, Output, PosEmbed, plan
from scrub.engine import ReferenceEngine
from scrub.engine.backends import backend_for
from scrub.errors import UnsupportedModelError
from scrub.model.bridge import hf_model_of_bridge, is_bridge
from scrub.tlcompat import NeedsHookedTransformerError

from conftest import random_dataset
from families import SCRUBBABLE as FAMILIES, hf_writers, make_hf_model as make_hf

pytestmark = [pytest.mark.tl4_only, pytest.mark.usefixtures("one_thread")]
ATOL = 1e-4
DATA = random_dataset(n=8, seed=5, name="bridge")


def _save_with_tokenizer(model, path):
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    model.save_pretrained(path)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(model.config.vocab_size)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(HF GPT-2, a TransformerBridge booted offline from its saved directory)."""
    from transformer_lens.model_bridge import TransformerBridge

    hf = make_hf("gpt2", seed=7)
    path = _save_with_tokenizer(hf, tmp_path_factory.mktemp("gpt2"))
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    try:
        bridge = TransformerBridge.boot_transformers(str(path))
    finally:
        mp.undo()
    return hf, bridge.eval()


def test_the_bridge_has_the_hf_logits_and_the_transformer_lens_backend(pair):
    hf, bridge = pair
    assert is_bridge(bridge) and not is_bridge(hf)
    assert type(backend_for(bridge)).__name__ == "TransformerLensBackend"
    assert not getattr(bridge, "_weights_processed", False)
    with torch.no_grad():
        assert torch.allclose(bridge(DATA.tokens), hf(DATA.tokens).logits, atol=ATOL)


from test_properties import CACHE as PROP_CACHE  # noqa: E402  (the random-hypothesis strategies)
from test_properties import DATA as PROP_DATA  # noqa: E402
from test_properties import SETTINGS, random_hypotheses, seeds  # noqa: E402


@SETTINGS
@given(h=random_hypotheses(), seed=seeds())
def test_transformer_lens_hooks_on_the_bridge_equal_hf_hooks_on_random_hypotheses(pair, h, seed):
    hf, bridge = pair
    s = plan(h, PROP_DATA, seed, features=PROP_CACHE)
    ours = ReferenceEngine(bridge, PROP_DATA).run(s)
    theirs = ReferenceEngine(hf, PROP_DATA).run(s)
    assert torch.allclose(ours, theirs, atol=ATOL)
    assert not bridge.cfg.use_attn_result and not bridge.cfg.use_split_qkv_input  # settings restored


def _port_patches(model, scale: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    patches = []
    for c in hf_writers(model)[1:]:
        ports = ("q", "k", "v") if isinstance(c, Head) else ("in",) if isinstance(c, MLP) else ()
        for port in ports:
            patches.append((c, port, scale * torch.randn(2, DATA.n_pos, model.config.hidden_size, generator=g)))
    return patches + [(Output(), "in", scale * torch.randn(2, DATA.n_pos, model.config.hidden_size, generator=g))]


@torch.no_grad()
def test_every_port_and_output_scrub_uses_is_hooked_on_the_bridge(pair):
    """A delta at each head's q/k/v, each MLP's input and the output's input: the patched
    component's output (the logits for the output) is the same on the bridge (TransformerLens hooks)
    as on the HF model (module hooks), and differs from the clean one; a zero delta changes nothing.
    (Only the patched component is compared: the HF backend replaces a projection's whole input, so
    there a head-port delta also reaches the layer's other heads, which the reference engine never
    reads from that pass.)"""
    hf, bridge = pair
    tokens = DATA.tokens[:2]
    tl_backend, hf_backend = backend_for(bridge), backend_for(hf)
    with tl_backend.session():
        clean = tl_backend.run(tokens, hf_writers(hf) + [Output()])
    for (c, port, delta), (_, _, zero) in zip(_port_patches(hf, 0.5, 1), _port_patches(hf, 0.0, 1)):
        with tl_backend.session():
            ours = tl_backend.run(tokens, [c], [(c, port, delta)])[c]
            unchanged = tl_backend.run(tokens, [c], [(c, port, zero)])[c]
        with hf_backend.session():
            theirs = hf_backend.run(tokens, [c], [(c, port, delta)])[c]
        assert torch.allclose(ours, theirs, atol=ATOL), (c, port)
        assert torch.allclose(unchanged, clean[c], atol=ATOL), (c, port)
        assert not torch.allclose(ours, clean[c], atol=1e-3), (c, port)


def test_evaluate_takes_the_bridge_on_the_reference_engine(pair):
    hf, bridge = pair
    h = Hypothesis("bridge")
    out = h.output()
    a = h.claim(Head(1, 0), EXACT, into=out)
    h.claim(Embed(), Feature.any(), into=(a, "q"))
    h.claim(MLP(0), EXACT, into=(a, "v"))
    h.claim(PosEmbed(), Feature.any(), into=h.claim(MLP(1), EXACT, into=out))
    data = random_dataset(n=12, seed=6)
    r = scrub.evaluate(h, bridge, data, engine="reference", seeds=2, n_boot=50)
    s = plan(h, data, seed=0)
    assert torch.allclose(ReferenceEngine(bridge, data).run(s), ReferenceEngine(hf, data).run(s), atol=ATOL)
    assert r.m_base > r.m_model and r.m_scrub == r.m_scrub  # finite, and the baseline is worse


# ---- the bridge's HF model, for the model view and the HF backend ----------------------------------


def test_hf_model_of_the_bridge_shares_its_tensors_and_logits(pair):
    hf, bridge = pair
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    plain = hf_model_of_bridge(bridge)
    assert torch.equal(torch.rand(2), expected)  # built on the meta device: no RNG use
    assert type(plain) is type(hf) and not plain.training and plain.tokenizer is bridge.tokenizer
    assert type(backend_for(plain)).__name__ == "HuggingFaceBackend"
    bridged = {p.data_ptr() for p in bridge.original_model.parameters()}
    assert all(p.data_ptr() in bridged for p in plain.parameters())
    with torch.no_grad():
        assert torch.equal(plain(DATA.tokens).logits, hf(DATA.tokens).logits)
    s = plan(_two_heads(), DATA, seed=2)
    assert torch.allclose(ReferenceEngine(plain, DATA).run(s), ReferenceEngine(bridge, DATA).run(s), atol=ATOL)


def _two_heads() -> Hypothesis:
    h = Hypothesis("two heads")
    out = h.output()
    h.claim(Head(1, 0), EXACT, into=out)
    h.claim(Head(0, 2), Feature.token(), into=out)
    return h


# Families whose bridge attention has no per-head hooks (TransformerLens 4.3), and Gemma-2 (post-norms,
# which the TL backend does not re-normalise): the TL backend refuses them by name, and the fix it
# names (the HF model, e.g. via hf_model_of_bridge) works.
NO_PER_HEAD_HOOKS = {"gptj", "gemma2"}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_bridge_of_every_family_unwraps_and_scrubs_like_its_hf_model(family):
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    hf = make_hf(family, seed=3)
    bridge = build_bridge_from_module(copy.deepcopy(hf), type(hf).__name__, hf_config=hf.config).eval()
    plain = hf_model_of_bridge(bridge)
    with torch.no_grad():
        assert torch.equal(plain(DATA.tokens).logits, hf(DATA.tokens).logits)
    s = plan(_two_heads(), DATA, seed=1)
    expected = ReferenceEngine(hf, DATA).run(s)
    assert torch.allclose(ReferenceEngine(plain, DATA).run(s), expected, atol=ATOL)
    if family in NO_PER_HEAD_HOOKS:
        with pytest.raises(UnsupportedModelError, match="pass the HuggingFace model"):
            ReferenceEngine(bridge, DATA).run(s)
    else:
        assert torch.allclose(ReferenceEngine(bridge, DATA).run(s), expected, atol=ATOL)


def test_hf_model_of_bridge_refuses_what_it_cannot_unwrap(pair):
    hf, bridge = pair
    with pytest.raises(UnsupportedModelError, match="TransformerBridge"):
        hf_model_of_bridge(hf)
    processed = copy.deepcopy(bridge)
    processed.enable_compatibility_mode()
    with pytest.raises(UnsupportedModelError, match="enable_compatibility_mode"):
        hf_model_of_bridge(processed)


def test_hooked_transformer_paths_refuse_with_the_fix():
    from scrub.model import ModelView
    from scrub.model.loaders import from_hf
    from scrub.zoo.recipes import build_model

    hf = make_hf("gpt2", seed=1)
    for call in (lambda: ModelView.from_hooked(hf), lambda: from_hf(hf),
                 lambda: build_model(scrub.zoo.info("induction-2l")["config"])):
        with pytest.raises(NeedsHookedTransformerError, match=r"transformer-lens<4") as info:
            call()
        assert "4.0" in str(info.value) and "HuggingFace" in str(info.value)
