"""Attribution patching: its gradients against TransformerLens autograd (independent of the
model view), exactness where the model is linear in the patched activation, and the agreement
report."""

from __future__ import annotations

import pytest
import torch

import scrub
from scrub import Feature
from scrub.errors import MetricError
from scrub.metrics import resolve
from scrub.patching import activation_patch
from scrub.patching.attribution import attribution_patch
from conftest import make_model, random_dataset

# one thread; and a HookedTransformer (the oracle is TransformerLens hooks / the models are HookedTransformers)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.requires_hooked]

NAMES = {
    "head": "attn.hook_z", "q": "attn.hook_q", "k": "attn.hook_k", "v": "attn.hook_v",
    "mlp": "hook_mlp_out", "resid": "hook_resid_pre",
}


def tl_attribution(model, data, corrupt, sites, metric):
    """Denoising estimates per cell with TransformerLens activations and autograd."""
    metric = resolve(metric)
    with torch.no_grad():
        _, source = model.run_with_cache(data.tokens)
    kept = {}

    def keep(act, hook):
        act.retain_grad()
        kept[hook.name] = act
        return act

    wanted = {f"blocks.{s.layer}.{NAMES[s.kind]}" for s in sites}
    logits = model.run_with_hooks(corrupt, fwd_hooks=[(lambda name: name in wanted, keep)])
    metric.fn(logits, data, None).sum().backward()
    out = []
    for s in sites:
        name = f"blocks.{s.layer}.{NAMES[s.kind]}"
        product = (source[name] - kept[name].detach()) * kept[name].grad  # z: [n, p, H, e]
        if s.head is not None:
            product = product[:, :, s.head]
        if s.position is not None:
            product = product[:, s.position]
        out.append(product.reshape(len(data), -1).sum(-1).double())
    model.zero_grad(set_to_none=True)
    return torch.stack(out)  # [cells, n]


@pytest.mark.parametrize("metric", ["target_logit", "cross_entropy"])
def test_estimates_match_transformer_lens_autograd(mlp_model, metric):
    data = random_dataset(n=12)
    corrupt = random_dataset(n=12, seed=7).tokens
    result = attribution_patch(mlp_model, data, ["heads", "q", "k", "v", "mlp", "resid"], corrupt=corrupt,
                               metric=metric, positions=[0, 4, 6])
    est = tl_attribution(mlp_model, data, corrupt, result.sites, metric)  # [cells, n]
    want = result.corrupt + est.mean(-1)  # estimated patched metric mean
    torch.testing.assert_close(result.patched, want, rtol=1e-4, atol=1e-4)


def test_exact_where_the_metric_is_linear_in_the_activation():
    """No LayerNorm, attention only: the logits are linear in the last layer's head outputs, so
    attribution equals activation patching there for a metric linear in the logits."""
    model = make_model(seed=3, attn_only=True, normalization_type=None)
    data = random_dataset(n=12)
    corrupt = random_dataset(n=12, seed=7).tokens
    heads = [scrub.Head(1, h) for h in range(3)]
    est = attribution_patch(model, data, heads, corrupt=corrupt, metric="target_logit", positions="each")
    exact = activation_patch(model, data, heads, corrupt=corrupt, metric="target_logit", positions="each")
    torch.testing.assert_close(est.effect, exact.effect, rtol=1e-4, atol=1e-4)


def test_compare_reports_agreement_on_the_induction_model():
    model = scrub.zoo.load("induction-2l")
    data = scrub.tasks.induction(n=24, seed=3)
    result = attribution_patch(model, data, ["heads", "k", "q", "v"], corrupt=Feature.any(), direction="noise", compare=True)
    ag = result.agreement
    assert set(ag) == {"pearson", "spearman", "recall", "largest_disagreements"}
    assert set(ag["recall"]) == {"5", "10", "20"}
    for k, entry in ag["recall"].items():
        assert 0.0 <= entry["recall"] <= 1.0
        assert len(entry["missed"]) == round((1 - entry["recall"]) * int(k))
    assert -1.0 <= ag["pearson"] <= 1.0
    assert "agreement with exact patching" in str(result)


def test_non_differentiable_metric_is_refused_before_running(mlp_model, monkeypatch):
    from scrub.patching import activation as act_module

    monkeypatch.setattr(act_module.Passes, "__init__", lambda *a, **k: pytest.fail("ran a forward pass"))
    data = random_dataset(n=4)
    with pytest.raises(MetricError, match="differentiable"):
        attribution_patch(mlp_model, data, corrupt=random_dataset(n=4, seed=7).tokens, metric="accuracy")


def test_qk_fix_is_exact_where_only_the_softmax_is_nonlinear():
    """No LayerNorm, attention only, last layer: after a head's output the metric is linear, so
    AtP*'s q/k fix (exact attention, linearised output) equals activation patching, while the
    plain estimate (linear through the softmax) does not."""
    model = make_model(seed=3, attn_only=True, normalization_type=None)
    data = random_dataset(n=12)
    corrupt = random_dataset(n=12, seed=7).tokens
    sites = [(scrub.Head(1, h), port) for h in range(3) for port in ("q", "k")]
    fixed = attribution_patch(model, data, sites, corrupt=corrupt, metric="target_logit", positions="each", qk_fix=True)
    plain = attribution_patch(model, data, sites, corrupt=corrupt, metric="target_logit", positions="each")
    exact = activation_patch(model, data, sites, corrupt=corrupt, metric="target_logit", positions="each")
    torch.testing.assert_close(fixed.effect, exact.effect, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(plain.effect, exact.effect, rtol=1e-3, atol=1e-3)
