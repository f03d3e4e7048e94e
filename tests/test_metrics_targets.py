"""Target kinds: each metric says what targets it reads (class ids, real values, none), and the
door checks the dataset's targets against it before any forward pass; `squared_error` scores a
real-valued read-out (the raw output channel ``index``)."""

from __future__ import annotations

import attrs
import pytest
import torch

import scrub
from conftest import D_VOCAB, copy_model, full_exact, random_dataset
from scrub import Dataset
from scrub.metrics import METRICS, resolve, squared_error

pytestmark = pytest.mark.usefixtures("one_thread")


def _real(seed: int = 4, n: int = 32) -> Dataset:
    """Float targets (a regression read-out) at every position but the last."""
    base = random_dataset(n=n, seed=seed)
    g = torch.Generator().manual_seed(seed)
    targets = torch.randn(base.tokens.shape, generator=g)  # [n, pos] float32
    targets[:, -1] = float("nan")  # unscored: never read
    return Dataset(tokens=base.tokens, targets=targets, loss_mask=base.loss_mask, name="regression")


@pytest.fixture()
def no_forward(attn_model):
    model = copy_model(attn_model)

    def forward(*args, **kwargs):
        raise AssertionError("a forward pass ran")

    model.forward = forward
    return model


def test_every_builtin_metric_declares_its_target_kind():
    kinds = {name: make().targets for name, make in METRICS.items()}
    assert kinds["cross_entropy"] == kinds["cross_entropy_tokens"] == kinds["accuracy"] == "class"
    assert kinds["logit_diff"] == kinds["target_logit"] == "class"
    assert kinds["kl"] == "none" and kinds["squared_error"] == "real"
    assert resolve(lambda logits, batch: logits[..., 0, 0]).targets == "any"


@pytest.mark.parametrize("metric", ["cross_entropy", "cross_entropy_tokens", "accuracy", "target_logit"])
def test_class_metrics_refuse_float_targets_before_any_forward_pass(metric, no_forward):
    data = _real()
    with pytest.raises(scrub.DatasetError, match=rf"metric '{metric}' reads class-index targets.*float32.*squared_error"):
        scrub.evaluate(full_exact(no_forward), no_forward, data, metric=metric)


def test_float_targets_in_the_unit_interval_no_longer_slip_through(no_forward):
    base = random_dataset(n=16)
    data = attrs.evolve(base, targets=torch.rand(base.targets.shape))  # int() of each is 0: a valid class
    with pytest.raises(scrub.DatasetError, match="class-index"):
        scrub.evaluate(full_exact(no_forward), no_forward, data)


def test_real_metric_refuses_bool_and_non_finite_targets(no_forward):
    data = _real()
    bad = data.targets.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(scrub.DatasetError, match="NaN or infinite targets at scored positions"):
        scrub.evaluate(full_exact(no_forward), no_forward, attrs.evolve(data, targets=bad), metric="squared_error")
    flags = attrs.evolve(data, targets=data.targets > 0)
    with pytest.raises(scrub.DatasetError, match="reads real-valued targets.*torch.bool"):
        scrub.evaluate(full_exact(no_forward), no_forward, flags, metric="squared_error")


def test_output_channel_must_exist(no_forward):
    with pytest.raises(scrub.MetricError, match=f"reads output channel {D_VOCAB}"):
        scrub.evaluate(full_exact(no_forward), no_forward, _real(), metric=squared_error(index=D_VOCAB))
    with pytest.raises(scrub.MetricError, match="index must be an output channel"):
        squared_error(index=-1)


def test_squared_error_matches_a_hand_computation(attn_model):
    data = _real()
    r = scrub.evaluate(full_exact(attn_model), attn_model, data, metric="squared_error", engine="reference", n_boot=20)
    with torch.no_grad():
        readout = attn_model(data.tokens)[..., 0].double()  # [n, pos]
    mask = data.loss_mask
    err = torch.where(mask, (readout - data.targets.double()) ** 2, 0.0)
    hand = float((err.sum(1) / mask.sum(1)).mean())
    assert r.metric == "squared_error" and r.lower_is_better
    assert r.m_model == pytest.approx(hand, rel=1e-5)
    assert r.loss_recovered == pytest.approx(1.0, abs=1e-6)  # every writer claimed exactly


def test_squared_error_reads_integer_targets_as_numbers(attn_model):
    data = random_dataset(n=16)
    r = scrub.evaluate(full_exact(attn_model), attn_model, data, metric=squared_error(index=2), engine="reference", n_boot=20)
    with torch.no_grad():
        readout = attn_model(data.tokens)[..., 2].double()
    mask = data.loss_mask
    err = torch.where(mask, (readout - data.targets.double()) ** 2, 0.0)
    assert r.m_model == pytest.approx(float((err.sum(1) / mask.sum(1)).mean()), rel=1e-5)


def test_metrics_that_read_no_targets_accept_any(attn_model):
    r = scrub.evaluate(full_exact(attn_model), attn_model, _real(), metric="kl", engine="reference", n_boot=20)
    assert r.m_model == pytest.approx(0.0, abs=1e-6)

    def mean_first_logit(logits, batch):
        return logits[:, 0, 0]

    r = scrub.evaluate(full_exact(attn_model), attn_model, _real(), metric=mean_first_logit, engine="reference", n_boot=20)
    assert r.metric == "mean_first_logit"
