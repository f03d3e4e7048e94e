"""The two cross-entropy weightings: `cross_entropy` (the mean within each row, then over rows) and
`cross_entropy_tokens` (one pooled mean over every scored token), each checked against a hand
computation from the model's own logits, with the ratio estimator's standard errors checked
against a direct delta-method computation (gradient and sample covariance)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import scrub
from conftest import N_POS, full_exact, random_dataset
from scrub import Dataset, Hypothesis
from scrub.metrics import loss_recovered, lr_combination, mean_difference
from scrub.result import mean_se

pytestmark = pytest.mark.usefixtures("one_thread")


def _ragged(n: int = 40, seed: int = 3) -> Dataset:
    """Rows scoring 1 to N_POS - 1 positions (different numbers of scored tokens)."""
    base = random_dataset(n=n, seed=seed)
    mask = torch.zeros_like(base.loss_mask)
    for i in range(n):
        mask[i, : 1 + i % (N_POS - 1)] = True
    return Dataset(tokens=base.tokens, targets=base.targets, loss_mask=mask, name="ragged")


def _token_losses(model, data: Dataset) -> torch.Tensor:
    """``[n, pos]`` cross-entropy of every position, from the model's own forward pass."""
    with torch.no_grad():
        logits = model(data.tokens).double()  # [n, pos, vocab]
    return F.cross_entropy(logits.transpose(1, 2), data.targets.clamp(min=0), reduction="none")  # [n, pos]


def _resampled() -> Hypothesis:
    h = Hypothesis("embed by token")
    h.claim(scrub.Embed(), scrub.Feature.token(), into=h.output())
    return h


@pytest.fixture(scope="module")
def both(attn_model):
    data = _ragged()
    h = _resampled()
    kw = dict(seeds=2, n_boot=200, engine="reference")
    return data, scrub.evaluate(h, attn_model, data, metric="cross_entropy", **kw), \
        scrub.evaluate(h, attn_model, data, metric="cross_entropy_tokens", **kw)


def test_the_two_weightings_differ_and_each_matches_a_hand_computation(attn_model, both):
    data, rows, tokens = both
    nll = _token_losses(attn_model, data)
    mask = data.loss_mask.double()
    row_means = (nll * mask).sum(1) / mask.sum(1)
    assert rows.m_model == pytest.approx(float(row_means.mean()), rel=1e-5)
    assert tokens.m_model == pytest.approx(float((nll * mask).sum() / mask.sum()), rel=1e-5)
    assert abs(rows.m_model - tokens.m_model) > 1e-3  # short rows weigh more in the row mean
    # same per-row values, weighted differently
    assert torch.equal(rows.rows.scrub, tokens.rows.scrub) and torch.equal(rows.rows.model, tokens.rows.model)
    c = data.loss_mask.sum(1).double()
    assert torch.equal(tokens.rows.weights, c) and rows.rows.weights is None
    m, b, s = tokens.rows.model, tokens.rows.base.mean(0), tokens.rows.scrub.mean(0)
    hand = float((c * (b - s)).sum() / (c * (b - m)).sum())
    assert tokens.loss_recovered == pytest.approx(hand, rel=1e-9)
    assert rows.loss_recovered == pytest.approx(float((b - s).mean() / (b - m).mean()), rel=1e-9)
    assert abs(rows.loss_recovered - tokens.loss_recovered) > 1e-4
    per_seed = [float((c * (tokens.rows.base[j] - tokens.rows.scrub[j])).sum() / (c * (tokens.rows.base[j] - m)).sum())
                for j in range(2)]
    assert tokens.lr_per_seed == pytest.approx(per_seed, rel=1e-9)
    lo, hi = tokens.ci
    assert lo < tokens.loss_recovered < hi


def _delta_se(num: torch.Tensor, den: torch.Tensor) -> float:
    """SE of mean(num) / mean(den) by the delta method: gradient and sample covariance."""
    n = num.shape[0]
    cov = torch.cov(torch.stack([num, den]))  # [2, 2], n - 1 in the denominator
    grad = torch.tensor([1 / den.mean(), -num.mean() / den.mean() ** 2], dtype=torch.float64)
    return float(torch.sqrt(grad @ cov @ grad / n))


def test_standard_errors_equal_the_delta_method(both):
    _, _, tokens = both
    c = tokens.rows.weights
    m, b, s = tokens.rows.model, tokens.rows.base.mean(0), tokens.rows.scrub.mean(0)
    assert tokens.m_model_se == pytest.approx(_delta_se(c * m, c), rel=1e-9)
    assert tokens.m_scrub_se == pytest.approx(_delta_se(c * s, c), rel=1e-9)
    assert tokens.stderr == pytest.approx(_delta_se(c * (b - s), c * (b - m)), rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 30), seed=st.integers(0, 10_000), scale=st.floats(0.1, 100))
def test_weighted_estimates_properties(n, seed, scale):
    g = torch.Generator().manual_seed(seed)
    model = torch.rand(n, generator=g, dtype=torch.float64)
    base = 2 + torch.rand(2, n, generator=g, dtype=torch.float64)
    scrub_ = 1 + torch.rand(2, n, generator=g, dtype=torch.float64)
    w = 1 + torch.randint(0, 6, (n,), generator=g).double()
    kw = dict(n_boot=50)
    plain = loss_recovered(model, base, scrub_, **kw)
    ones = loss_recovered(model, base, scrub_, weights=torch.ones(n), **kw)
    # equal weights are no weights
    assert ones.value == pytest.approx(plain.value, rel=1e-12) and ones.stderr == pytest.approx(plain.stderr, rel=1e-9)
    assert ones.ci == pytest.approx(plain.ci, rel=1e-9)
    # weights are relative: scaling all of them changes nothing
    a = loss_recovered(model, base, scrub_, weights=w, **kw)
    b = loss_recovered(model, base, scrub_, weights=w * scale, **kw)
    assert a.value == pytest.approx(b.value, rel=1e-9) and a.stderr == pytest.approx(b.stderr, rel=1e-9)
    assert a.ci == pytest.approx(b.ci, rel=1e-9)
    # integer weights are repeated rows, for the value
    rep = torch.repeat_interleave(torch.arange(n), w.long())
    expanded = loss_recovered(model[rep], base[:, rep], scrub_[:, rep], **kw)
    assert a.value == pytest.approx(expanded.value, rel=1e-9)
    assert mean_se(model, w)[0] == pytest.approx(float(model[rep].mean()), rel=1e-9)
    d = mean_difference(scrub_, base, weights=w, n_boot=50)
    diff = scrub_.mean(0) - base.mean(0)
    assert d.value == pytest.approx(float((w * diff).sum() / w.sum()), rel=1e-9)
    assert d.stderr == pytest.approx(_delta_se(w * diff, w), rel=1e-9)
    combo = lr_combination(model, base, [scrub_], [1.0], weights=w, n_boot=50)
    assert combo.value == pytest.approx(a.value, rel=1e-12)


def test_bad_weights_are_refused():
    with pytest.raises(scrub.MetricError, match="row weights"):
        loss_recovered(torch.zeros(4), torch.ones(1, 4), torch.ones(1, 4), weights=torch.tensor([1.0, 0.0, 1.0, 1.0]))


def test_reports_and_comparisons_use_the_weights(attn_model):
    data = _ragged(n=24)
    h = full_exact(attn_model)
    cmp = scrub.compare([h, _resampled()], attn_model, data, seeds=1, n_boot=20, metric="cross_entropy_tokens")
    first, second = cmp.results
    c = first.rows.weights
    m, b = first.rows.model, first.rows.base.mean(0)
    lr = [float((c * (b - r.rows.scrub.mean(0))).sum() / (c * (b - m)).sum()) for r in cmp.results]
    assert cmp.differences[0].difference.value == pytest.approx(lr[0] - lr[1], rel=1e-9, abs=1e-12)
    assert math.isfinite(cmp.differences[0].difference.stderr)
