"""Tests of the task generators in `scrub.tasks`."""

from __future__ import annotations

import pytest
import torch

import scrub.tasks
from scrub.data import Dataset
from scrub.errors import DatasetError, ScrubError
from scrub.tasks import induction


def test_exports():
    assert "induction" in scrub.tasks.__all__
    assert scrub.tasks.induction is induction


def test_shapes_and_extras():
    data = induction(n=100, seed=3)
    assert isinstance(data, Dataset)
    assert len(data) == 100 and data.n_pos == 32
    assert data.tokens.shape == data.targets.shape == data.loss_mask.shape == (100, 32)
    assert data.tokens.dtype == torch.int64 and data.loss_mask.dtype == torch.bool
    assert data.tokens.min() >= 0 and data.tokens.max() < 50
    assert set(data.extras) == {"period", "second_start"}
    period, second = data.extras["period"], data.extras["second_start"]
    assert period.shape == second.shape == (100,)
    assert period.min() >= 6 and period.max() <= 16
    assert torch.equal(second, 32 - period)
    assert data.name == "induction"


def test_custom_sizes():
    data = induction(n=7, seed=0, vocab=3, n_ctx=10, min_period=5, max_period=5, name="tiny")
    assert data.tokens.shape == (7, 10) and data.tokens.max() < 3
    assert (data.extras["period"] == 5).all()
    assert data.name == "tiny"


def test_periods_cover_the_range():
    period = induction(n=2000, seed=1).extras["period"]
    assert set(period.tolist()) == set(range(6, 17))


def test_targets_are_next_tokens():
    data = induction(n=50, seed=4)
    assert torch.equal(data.targets[:, :-1], data.tokens[:, 1:])


def test_copies_repeat():
    data = induction(n=200, seed=5)
    for row in range(len(data)):
        L = int(data.extras["period"][row])
        toks = data.tokens[row]
        assert torch.equal(toks[32 - L :], toks[32 - 2 * L : 32 - L])


def test_mask_is_exactly_the_predictable_positions():
    data = induction(n=300, seed=6)
    pos = torch.arange(32)
    for row in range(len(data)):
        L = int(data.extras["period"][row])
        expected = (pos >= 32 - L) & (pos <= 30)
        assert torch.equal(data.loss_mask[row], expected)
        for t in expected.nonzero().flatten().tolist():
            assert data.tokens[row, t + 1] == data.tokens[row, t + 1 - L]
            assert data.targets[row, t] == data.tokens[row, t + 1 - L]
    # every row has L - 1 scored positions
    assert torch.equal(data.loss_mask.sum(1), data.extras["period"] - 1)


def test_determinism_per_seed():
    a, b = induction(n=64, seed=11), induction(n=64, seed=11)
    for x, y in [(a.tokens, b.tokens), (a.targets, b.targets), (a.loss_mask, b.loss_mask)]:
        assert torch.equal(x, y)
    assert torch.equal(a.extras["period"], b.extras["period"])
    assert a.fingerprint() == b.fingerprint()
    noisy_a, noisy_b = induction(n=64, seed=11, noise=0.3), induction(n=64, seed=11, noise=0.3)
    assert torch.equal(noisy_a.tokens, noisy_b.tokens)


def test_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    induction(n=16, seed=0, noise=0.5)
    assert torch.equal(torch.rand(3), expected)


def test_different_seeds_differ():
    a, b = induction(n=64, seed=0), induction(n=64, seed=1)
    assert not torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.extras["period"], b.extras["period"])
    assert a.fingerprint() != b.fingerprint()


def test_noise_corrupts_only_the_second_copy_after_its_first_token():
    clean = induction(n=500, seed=8)
    noisy = induction(n=500, seed=8, noise=0.5)
    # same periods and mask; noise is drawn after the clean sequence
    assert torch.equal(clean.extras["period"], noisy.extras["period"])
    assert torch.equal(clean.loss_mask, noisy.loss_mask)
    changed = clean.tokens != noisy.tokens  # [n, pos]
    pos = torch.arange(32)[None, :]
    allowed = pos > clean.extras["second_start"][:, None]
    assert changed.any()
    assert not (changed & ~allowed).any()
    # roughly noise * (1 - 1/vocab) of the allowed tokens change
    rate = changed[allowed].float().mean().item()
    assert 0.4 < rate < 0.58
    assert torch.equal(noisy.targets[:, :-1], noisy.tokens[:, 1:])


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(n=0), "n="),
        (dict(n=-3), "n="),
        (dict(vocab=1), "vocab"),
        (dict(max_period=17), "2 * max_period"),
        (dict(n_ctx=20), "2 * max_period"),
        (dict(min_period=1), "min_period"),
        (dict(min_period=10, max_period=8), "min_period"),
        (dict(noise=1.0), "noise"),
        (dict(noise=-0.1), "noise"),
        (dict(noise="a lot"), "noise"),
        (dict(seed=-1), "seed"),
        (dict(n=2.5), "n must be an integer"),
        (dict(vocab=True), "vocab"),
        (dict(name=3), "name"),
    ],
)
def test_argument_errors(kwargs, fragment):
    with pytest.raises(DatasetError, match=fragment.replace("*", r"\*")) as info:
        induction(**kwargs)
    assert isinstance(info.value, ScrubError)
