"""Tests of the paren-balance task, the shipped ``parens-3l`` model and hypotheses/parens.py."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

import scrub
from scrub.data import Dataset, Feature
from scrub.errors import DatasetError
from scrub.tasks import parens
from scrub.tasks.parens import CLOSE, END, KINDS, OPEN, PAD, START, decode, encode, features, parens_from_strings

ROOT = Path(__file__).resolve().parents[1]


def _reference(s: str) -> dict:
    """The features of one string, computed the slow, obvious way."""
    opens = s.count("(")
    depth, low = 0, 0
    for c in s:
        depth += 1 if c == "(" else -1
        low = min(low, depth)
    suffix_ok = all(2 * s[i:].count("(") <= len(s) - i for i in range(len(s)))
    return {
        "balanced": depth == 0 and low >= 0,
        "count_test": 2 * opens == len(s),
        "horizon_test": suffix_ok,
        "prefix_horizon_test": low >= 0,
        "starts_open": s[:1] == "(",
        "length": len(s),
        "open_proportion": [opens / len(s)] + [s[i:].count("(") / (len(s) - i) for i in range(len(s))],
    }


# ---- the task -------------------------------------------------------------------------------------


def test_exports():
    assert "parens" in scrub.tasks.__all__
    assert scrub.tasks.parens is parens


def test_shapes_targets_and_mask():
    data = parens(n=300, seed=1)
    assert isinstance(data, Dataset) and data.name == "parens"
    assert data.tokens.shape == data.targets.shape == data.loss_mask.shape == (300, 42)
    assert data.tokens.dtype == torch.int64 and data.tokens.min() >= 0 and data.tokens.max() <= 4
    assert (data.tokens[:, 0] == START).all()
    assert data.loss_mask[:, 0].all() and not data.loss_mask[:, 1:].any()
    assert torch.equal(data.targets[:, 0], data.extras["balanced"].long())
    assert (data.targets[:, 1:] == 0).all()
    length = data.extras["length"]
    assert length.min() >= 2 and length.max() <= 40
    rows = torch.arange(300)
    assert (data.tokens[rows, length + 1] == END).all()
    pos = torch.arange(42)[None, :]
    body = (pos >= 1) & (pos <= length[:, None])
    assert ((data.tokens == OPEN) | (data.tokens == CLOSE))[body].all()
    assert (data.tokens[pos > length[:, None] + 1] == PAD).all()
    for key in ("balanced", "count_test", "horizon_test", "prefix_horizon_test", "starts_open",
                "count_and_starts_open", "p1_if_starts_open", "length", "kind"):
        assert data.extras[key].shape == (300,), key
    for key in ("open_proportion", "horizon_at"):
        assert data.extras[key].shape == (300, 42), key


def test_deterministic_per_seed():
    a, b, c = parens(n=200, seed=3), parens(n=200, seed=3), parens(n=200, seed=4)
    assert a.fingerprint() == b.fingerprint()
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)
    assert torch.equal(parens(n=50, seed=3, max_len=10).tokens, parens(n=50, seed=3, max_len=10).tokens)


def test_about_a_quarter_balanced_and_every_kind():
    data = parens(n=4096, seed=0)
    e = data.extras
    assert 0.22 < e["balanced"].float().mean() < 0.30
    kind = e["kind"]
    for k, (name, share) in enumerate(KINDS):
        assert abs(float((kind == k).float().mean()) - share) < 0.03, name
    assert e["balanced"][kind == 0].all()
    assert not e["balanced"][kind == 1].any() and e["count_test"][kind == 1].all()
    assert not e["balanced"][kind == 2].any() and e["count_test"][kind == 2].all()
    assert not e["count_test"][kind == 3].any()
    # near misses of the horizon test dip exactly one below zero
    for s in decode(data.tokens[kind == 2][:100]):
        depth = [0]
        for ch in s:
            depth.append(depth[-1] + (1 if ch == "(" else -1))
        assert min(depth) == -1 and depth[-1] == 0
    # lengths cover the range, odd ones included (from the random kind)
    assert set(e["length"].tolist()) == set(range(2, 41))


def test_hand_written_strings():
    cases = ["(())", ")(", "(()", "((", "()()", "())(", "()", "))(("]
    data = parens_from_strings(cases)
    e = data.extras
    expect = {
        "balanced": [True, False, False, False, True, False, True, False],
        "count_test": [True, True, False, False, True, True, True, True],
        "horizon_test": [True, False, False, False, True, False, True, False],
        "prefix_horizon_test": [True, False, True, True, True, False, True, False],
        "starts_open": [True, False, True, True, True, True, True, False],
    }
    for key, values in expect.items():
        assert e[key].tolist() == values, key
    assert e["count_and_starts_open"].tolist() == [True, False, False, False, True, True, True, False]
    assert torch.equal(data.targets[:, 0], e["balanced"].long())
    assert e["length"].tolist() == [4, 2, 3, 2, 4, 4, 2, 4]
    # "(()": suffix proportions 2/3 (whole string, at positions 0 and 1), 1/2, 0; then -1
    p = e["open_proportion"][2]
    assert p[:4].tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 2, 0.0])
    assert (p[4:] == -1).all()
    assert e["p1_if_starts_open"][2] == pytest.approx(2 / 3)
    assert e["p1_if_starts_open"][1] == -1
    # Redwood's per-position horizon classes for "(()" and ")(": +-2 on tokens, +-1 on END, 0 on PAD
    assert e["horizon_at"][2, :6].tolist() == [-2, -2, 2, 2, 1, 0]
    assert e["horizon_at"][1, :5].tolist() == [2, 2, -2, -1, 0]
    assert decode(encode(cases)) == cases


def test_features_match_a_slow_reference():
    data = parens(n=400, seed=5)
    strings = decode(data.tokens)
    e = data.extras
    for i, s in enumerate(strings):
        ref = _reference(s)
        for key in ("balanced", "count_test", "horizon_test", "prefix_horizon_test", "starts_open", "length"):
            assert e[key][i].item() == ref[key], (s, key)
        p = e["open_proportion"][i]
        assert p[: len(s) + 1].tolist() == pytest.approx(ref["open_proportion"])
        assert (p[len(s) + 1 :] == -1).all()
        assert (e["horizon_at"][i] >= 0).all().item() == ref["horizon_test"]


def test_feature_dict():
    data = parens(n=100, seed=2)
    feats = features()
    for key in ("count_test", "horizon_test", "starts_open", "count_and_starts_open", "open_proportion"):
        assert isinstance(feats[key], Feature)
    assert feats["count_test"].evaluate(data).ids.shape == (100,)
    assert feats["open_proportion"].evaluate(data).ids.shape == (100, 42)
    both = feats["count_and_starts_open"].evaluate(data).ids
    e = data.extras
    assert torch.equal(both.bool(), e["count_test"] & e["starts_open"])


def test_mix_and_errors():
    data = parens(n=500, seed=0, mix={"balanced": 1, "near_count": 1})
    assert set(data.extras["kind"].tolist()) == {0, 3}
    with pytest.raises(DatasetError):
        parens(n=0)
    with pytest.raises(DatasetError):
        parens(n=10, max_len=7)
    with pytest.raises(DatasetError):
        parens(n=10, mix={"nonsense": 1.0})
    with pytest.raises(DatasetError):
        parens(n=10, seed=-1)
    with pytest.raises(DatasetError):
        encode(["(a)"])


# ---- the shipped model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return scrub.zoo.load("parens-3l")


@pytest.mark.requires_hooked
def test_shipped_model_reaches_its_documented_accuracy(model):
    record = scrub.zoo.info("parens-3l")
    cfg = model.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model, cfg.d_mlp) == (3, 2, 28, 56, 56)
    assert (cfg.d_vocab, cfg.d_vocab_out, cfg.n_ctx, cfg.attention_dir) == (5, 2, 42, "bidirectional")
    data = parens(n=2048, seed=12345)
    with torch.no_grad():
        logits = model(data.tokens)[:, 0]
    accuracy = float((logits.argmax(-1) == data.targets[:, 0]).float().mean())
    loss = float(torch.nn.functional.cross_entropy(logits, data.targets[:, 0]))
    assert accuracy == pytest.approx(record["eval"]["accuracy"], abs=2e-3)
    assert loss == pytest.approx(record["eval"]["loss"], rel=1e-2, abs=1e-3)
    assert accuracy >= 0.97
    assert record["eval"]["fingerprint"] == data.fingerprint()


# ---- the hypothesis file --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hypfile():
    spec = importlib.util.spec_from_file_location("parens_hypotheses", ROOT / "hypotheses" / "parens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hypothesis_file_matches_the_recorded_head_roles(hypfile):
    roles = scrub.zoo.info("parens-3l")["heads"]["roles"]
    assert [str(h) for h in hypfile.COUNT_HEADS] == roles["count_heads"]
    assert [str(h) for h in hypfile.HORIZON_HEADS] == roles["horizon_heads"]
    assert [str(hypfile.PREFIX_HEAD)] == roles["prefix_heads"]
    assert str(hypfile.P_HEAD) == roles["p_head"]


@pytest.mark.zoo_api
def test_every_hypothesis_validates_and_runs(hypfile, model):
    data = parens(n=384, seed=0)
    names = set()
    for h in hypfile.hypotheses():
        h.validate(model, n_pos=data.n_pos)
        names.add(h.name)
        r = scrub.evaluate(h, model, data, n=128, seeds=1, n_boot=50)
        assert math.isfinite(r.loss_recovered), h.name
        assert math.isfinite(r.m_scrub) and r.m_base > r.m_model
    assert len(names) == len(hypfile.hypotheses()) >= 5
