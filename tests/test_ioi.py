"""Tests of the IOI task (`scrub.tasks.ioi`) and the IOI hypotheses (`hypotheses/ioi.py`), offline.

The task runs on the word-level tokenizer; the hypotheses run on a randomly initialised
GPT-2-small-shaped model (12 layers x 12 heads, a tiny d_model), never on downloaded weights.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import pytest
import torch

import scrub
import scrub.tasks
from scrub import Dataset, Head
from scrub.errors import DatasetError, ScrubError
from scrub.hypothesis import ModelShape
from scrub.tasks import ioi, ioi_features, ioi_word_tokenizer
from scrub.tasks.ioi import IOI_NAMES, IOI_TEMPLATES, WordTokenizer, ioi_layout, is_single_token

from conftest import perturb

HYPOTHESES_FILE = Path(__file__).resolve().parents[1] / "hypotheses" / "ioi.py"
LAYOUT = {"n1_pos": 2, "n2_pos": 4, "s2_pos": 10, "end_pos": 14, "n_pos": 15}
EXTRAS = {"io", "s", "wrong_target", "io_pos", "s1_pos", "s2_pos", "end_pos", "template", "duplicated_first"}


@pytest.fixture(scope="module")
def tok() -> WordTokenizer:
    return ioi_word_tokenizer()


@pytest.fixture(scope="module")
def data(tok) -> Dataset:
    return ioi(tok, n=64, seed=0)


def _rows(data: Dataset) -> torch.Tensor:
    return torch.arange(len(data))


# ---- the task -----------------------------------------------------------------------------------


def test_exports():
    for fn in (ioi, ioi_features, ioi_word_tokenizer):
        assert fn.__name__ in scrub.tasks.__all__
        assert getattr(scrub.tasks, fn.__name__) is fn


def test_word_tokenizer(tok):
    assert len(tok) == tok.vocab_size and tok.bos_token_id == tok.pad_token_id == 0
    ids = tok.encode("When Mary and John went to the store, John gave a drink to")
    assert len(ids) == 14 and tok.decode(ids) == "When Mary and John went to the store, John gave a drink to"
    assert tok.encode(" Mary") == [tok.encode(" Mary")[0]] and is_single_token(tok, " Mary")
    assert len(tok.encode(" Zyxwv")) > 1  # unknown words fall back to characters
    assert ioi_word_tokenizer().vocab == tok.vocab  # deterministic


def test_shapes_and_extras(data, tok):
    n, p = 64, LAYOUT["n_pos"]
    assert data.tokens.shape == data.targets.shape == data.loss_mask.shape == (n, p)
    assert data.tokens.dtype == torch.int64 and data.loss_mask.dtype == torch.bool
    assert data.tokens.min() >= 0 and data.tokens.max() < len(tok)
    assert set(data.extras) == EXTRAS
    assert all(v.shape == (n,) for v in data.extras.values())
    assert data.name == "ioi"
    assert ioi_layout() == LAYOUT and ioi_layout(data) == LAYOUT


def test_targets_and_positions(data, tok):
    ex, rows = data.extras, _rows(data)
    assert (ex["end_pos"] == LAYOUT["end_pos"]).all()
    # loss only at END, whose target is the IO name; elsewhere the next token
    assert torch.equal(data.loss_mask, torch.arange(data.n_pos)[None] == ex["end_pos"][:, None])
    assert torch.equal(data.targets[rows, ex["end_pos"]], ex["io"])
    assert torch.equal(data.targets[:, :-1], data.tokens[:, 1:])
    # the names sit where the extras say
    assert torch.equal(data.tokens[rows, ex["io_pos"]], ex["io"])
    assert torch.equal(data.tokens[rows, ex["s1_pos"]], ex["s"])
    assert torch.equal(data.tokens[rows, ex["s2_pos"]], ex["s"])
    assert torch.equal(ex["wrong_target"], ex["s"])
    assert (ex["io"] != ex["s"]).all()
    assert torch.equal(ex["duplicated_first"].bool(), ex["s1_pos"] < ex["io_pos"])
    assert set(ex["duplicated_first"].tolist()) == {0, 1}
    name_ids = {tok.encode(" " + w)[0] for w in IOI_NAMES}
    assert set(ex["io"].tolist()) <= name_ids and set(ex["s"].tolist()) <= name_ids
    # each row is its template with the names filled in
    for r in range(8):
        text = tok.decode(data.tokens[r, 1:])
        first, second = (ex["s"][r], ex["io"][r]) if ex["duplicated_first"][r] else (ex["io"][r], ex["s"][r])
        template = IOI_TEMPLATES[int(ex["template"][r])]
        head = template.split("{PLACE}")[0].format(N1=tok.decode([first])[1:], N2=tok.decode([second])[1:])
        assert text.startswith(head)
        assert data.tokens[r, 0] == tok.bos_token_id


def test_determinism(tok):
    a, b = ioi(tok, n=40, seed=3), ioi(tok, n=40, seed=3)
    assert torch.equal(a.tokens, b.tokens) and a.fingerprint() == b.fingerprint()
    assert all(torch.equal(a.extras[k], b.extras[k]) for k in a.extras)
    assert not torch.equal(a.tokens, ioi(tok, n=40, seed=4).tokens)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ioi(tok, n=16, seed=0, abc=True)
    assert torch.equal(torch.rand(3), expected)  # no global RNG


def test_abc_variant(tok):
    clean, abc = ioi(tok, n=64, seed=5), ioi(tok, n=64, seed=5, abc=True)
    ex, rows = abc.extras, _rows(abc)
    names = torch.stack([abc.tokens[rows, ex[key]] for key in ("io_pos", "s1_pos", "s2_pos")])
    assert (names[0] != names[1]).all() and (names[0] != names[2]).all() and (names[1] != names[2]).all()
    assert torch.equal(names[2], ex["c"])
    # no name is duplicated anywhere in the prompt
    name_ids = torch.tensor([tok.encode(" " + w)[0] for w in IOI_NAMES])
    is_name = torch.isin(abc.tokens, name_ids)
    for r in range(len(abc)):
        found = abc.tokens[r][is_name[r]].tolist()
        assert len(found) == 3 and len(set(found)) == 3
    # same seed: the same rows with only S2 replaced
    differ = clean.tokens != abc.tokens
    assert torch.equal(differ, torch.arange(abc.n_pos)[None] == ex["s2_pos"][:, None])
    for key in EXTRAS:
        assert torch.equal(clean.extras[key], ex[key]), key


def test_multi_token_name_raises(tok):
    with pytest.raises(DatasetError, match="single token") as info:
        ioi(tok, n=8, names=["Mary", "John", "Zyxwv"])
    assert "Zyxwv" in str(info.value) and isinstance(info.value, ScrubError)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(n=0), "n="),
        (dict(seed=-1), "seed"),
        (dict(n=2.5), "n must be an integer"),
        (dict(names=["Mary", "John"]), "at least 3"),
        (dict(names=["Mary", "John", "Mary"]), "duplicates"),
        (dict(templates=["When {N1} and {N2} left, {N1} waved to"]), "S2"),
        (dict(templates=["When {N1} and {N2} met, {S2} gave a {OBJECT}"]), "end with a word"),
        (dict(name=3), "name"),
    ],
)
def test_argument_errors(tok, kwargs, fragment):
    kwargs = {"n": 8, **kwargs}
    with pytest.raises(DatasetError, match=fragment):
        ioi(tok, **kwargs)


def test_tokenizer_interfaces(tok):
    """A plain callable, or an object whose encode takes only the text, gives the same tokens."""

    class EncodeOnly:
        bos_token_id = 0

        def encode(self, text):
            return tok.encode(text)

    ref = ioi(tok, n=16, seed=2)
    for other in (EncodeOnly(), lambda text: tok.encode(text)):
        data = ioi(other, n=16, seed=2)
        assert torch.equal(data.tokens, ref.tokens)
    with pytest.raises(DatasetError, match="encode"):
        ioi(object(), n=4)


def test_huggingface_tokenizer_adds_no_second_bos(tok):
    """A transformers tokenizer that prepends BOS itself (as TransformerLens's GPT-2 one does)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    inner = Tokenizer(models.WordLevel({p: i for i, p in enumerate(tok.vocab)}, unk_token=tok.special))
    inner.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[A-Za-z]+| ?[^\sA-Za-z0-9]+"), behavior="isolated")
    inner.post_processor = processors.TemplateProcessing(single=f"{tok.special} $A", special_tokens=[(tok.special, 0)])
    hf = PreTrainedTokenizerFast(tokenizer_object=inner, bos_token=tok.special, eos_token=tok.special)
    assert hf.encode("When Mary")[0] == 0  # it adds BOS by default
    assert torch.equal(ioi(hf, n=16, seed=2).tokens, ioi(tok, n=16, seed=2).tokens)


def test_no_bos_and_custom_layouts(tok):
    data = ioi(tok, n=16, seed=1, prepend_bos=False)
    assert ioi_layout(data) == ioi_layout(prepend_bos=False) == {k: v - 1 for k, v in LAYOUT.items()}
    # a template of another length: prompts are right-padded and positions are per row
    templates = [IOI_TEMPLATES[0], "When {N1} and {N2} met, {S2} gave a {OBJECT} to"]
    mixed = ioi(tok, n=64, seed=1, templates=templates)
    ex, rows = mixed.extras, _rows(mixed)
    assert set(ex["end_pos"].tolist()) == {14, 11}
    assert torch.equal(mixed.targets[rows, ex["end_pos"]], ex["io"])
    assert torch.equal(mixed.tokens[rows, ex["s2_pos"]], ex["s"])
    short = ex["end_pos"] == 11
    assert (mixed.tokens[short, 12:] == tok.pad_token_id).all() and not mixed.loss_mask[short, 12:].any()
    with pytest.raises(DatasetError, match="fixed_layout"):
        ioi_layout(mixed)
    fixed = ioi(tok, n=64, seed=1, templates=templates + [IOI_TEMPLATES[1]], fixed_layout=True)
    assert ioi_layout(fixed) == LAYOUT and set(fixed.extras["template"].tolist()) == {0, 2}


def test_features(data):
    feats = ioi_features()
    assert {"io", "s", "s2_pos", "duplicated_first", "template", "s_and_duplicated"} <= set(feats)
    for feature in feats.values():
        values = feature.evaluate(data)
        assert values.ids.shape == (len(data),)
    both = feats["s_and_duplicated"].evaluate(data).ids
    ex = data.extras
    for i in range(len(data)):
        same = both == both[i]
        assert (ex["s"][same] == ex["s"][i]).all() and (ex["duplicated_first"][same] == ex["duplicated_first"][i]).all()


# ---- the hypotheses -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hyp_module():
    spec = importlib.util.spec_from_file_location("scrub_test_hypotheses_ioi", HYPOTHESES_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpt2_shaped(tok):
    """A random model with GPT-2 small's layers and heads (and a tiny width), built offline."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=12, n_heads=12, d_model=48, d_head=4, d_mlp=192, act_fn="gelu_new",
        normalization_type="LN", d_vocab=len(tok), n_ctx=LAYOUT["n_pos"], device="cpu", seed=0,
        init_weights=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(cfg)
    return perturb(model, 7)


@pytest.mark.requires_hooked
def test_hypothesis_file_loads_without_gpt2(monkeypatch):
    from transformer_lens import HookedTransformer

    from scrub.hypfile import load_hypothesis_file

    def refuse(*args, **kwargs):
        raise AssertionError("the test must not load GPT-2")

    monkeypatch.setattr(HookedTransformer, "from_pretrained", refuse)
    spec = load_hypothesis_file(HYPOTHESES_FILE)
    found = spec.hypotheses()
    assert len(found) >= 3 and len({h.name for h in found}) == len(found)
    assert callable(spec.model) and callable(spec.module.dataset)


def test_full_circuit_structure(hyp_module):
    h = hyp_module.full()
    heads = {c.component for c in h.claims if isinstance(c.component, Head)}
    assert len(heads) == 26  # 26 heads in 7 classes (Wang et al.)
    end, s2 = LAYOUT["end_pos"], LAYOUT["s2_pos"]
    edges = h.edges
    into_out = [e for e in edges if e.parent.is_output]
    assert len(into_out) == 13 and all(e.positions == (end,) and e.child.feature.name == "IO name" for e in into_out)
    sinh = [e for e in edges if e.child.component == Head(7, 3)]
    assert len(sinh) == 13 and all(e.port == "q" and e.positions == (end,) for e in sinh)
    ind = [e for e in edges if e.child.component == Head(5, 5)]
    assert {e.parent.component for e in ind} == set(hyp_module.S_INHIBITION)
    assert all(e.port == "v" and e.positions == (s2,) for e in ind)
    prev = [e for e in edges if e.child.component == Head(4, 11)]
    assert {e.parent.component for e in prev} == set(hyp_module.INDUCTION) and all(e.port == "k" for e in prev)
    without = hyp_module.without_backup()
    assert not any(c.component in hyp_module.BACKUP_NAME_MOVERS for c in without.claims)
    only = hyp_module.name_movers_only()
    assert {c.component for c in only.claims[1:]} == set(hyp_module.NAME_MOVERS)
    shape = ModelShape(n_layers=12, n_heads=12, n_ctx=LAYOUT["n_pos"], attn_only=False)
    hyp_module.circuit(extended_embedding=True).validate(shape)
    position_only = hyp_module.position_signal_only()
    assert {c.feature.name for c in position_only.claims if c.component == Head(7, 3)} == {"which name is duplicated"}


@pytest.mark.requires_hooked
def test_every_hypothesis_runs_on_a_gpt2_shaped_model(hyp_module, gpt2_shaped, data):
    for h in hyp_module.hypotheses():
        h.validate(gpt2_shaped, n_pos=data.n_pos)
        result = scrub.evaluate(h, gpt2_shaped, data, n=32, seeds=1, metric="logit_diff")
        assert result.n_rows == 32 and result.metric == "logit_diff"
        for value in (result.loss_recovered, result.m_model, result.m_base, result.m_scrub):
            assert math.isfinite(value), (h.name, value)
