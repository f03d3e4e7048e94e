"""Activation patching: the batched sweep against a plain TransformerLens hook loop (one forward
per cell, independent of the model view), the identities, and the normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import scrub
from scrub import Feature, Head, MLP
from scrub.metrics import resolve
from scrub.patching import CORRUPT_KEY, activation_patch, paired
from scrub.patching.result import ratio_with_se
from conftest import make_model, random_dataset

# one thread; and a HookedTransformer (the oracle is TransformerLens hooks / the models are HookedTransformers)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.requires_hooked]

HOOKS = {
    "head": lambda l: f"blocks.{l}.attn.hook_z",
    "q": lambda l: f"blocks.{l}.attn.hook_q",
    "k": lambda l: f"blocks.{l}.attn.hook_k",
    "v": lambda l: f"blocks.{l}.attn.hook_v",
    "mlp": lambda l: f"blocks.{l}.hook_mlp_out",
    "resid": lambda l: f"blocks.{l}.hook_resid_pre",
}


def hook_loop(model, data, corrupt_tokens, sites, direction, metric):
    """Per cell, one TransformerLens forward of the base tokens with one hook writing the source
    run's value: the slow, independent path. Returns ``(patched [cells], clean, corrupt)`` means."""
    metric = resolve(metric)
    base, source = (corrupt_tokens, data.tokens) if direction == "denoise" else (data.tokens, corrupt_tokens)
    with torch.no_grad():
        clean_logits = model(data.tokens)
        corrupt_logits = model(corrupt_tokens)
        _, cache = model.run_with_cache(source)
    kw = lambda logits: metric(logits, data, clean_logits if metric.needs_clean else None)  # noqa: E731
    out = []
    for site in sites:
        name = HOOKS[site.kind](site.layer)
        src = cache[name]

        def hook(act, hook, site=site, src=src):
            pos = slice(None) if site.position is None else site.position
            if site.head is None:
                act[:, pos] = src[:, pos]
            else:
                act[:, pos, site.head] = src[:, pos, site.head]
            return act

        with torch.no_grad():
            logits = model.run_with_hooks(base, fwd_hooks=[(name, hook)])
        out.append(float(kw(logits).mean()))
    return torch.tensor(out, dtype=torch.float64), float(kw(clean_logits).mean()), float(kw(corrupt_logits).mean())


def check_against_loop(model, data, corrupt, components, direction, metric=None, positions="each"):
    result = activation_patch(model, data, components, direction=direction, corrupt=corrupt, metric=metric, positions=positions)
    want, clean, corr = hook_loop(model, data, corrupt, result.sites, direction, metric or "target_logit")
    assert result.clean == pytest.approx(clean, rel=1e-5, abs=1e-5)
    assert result.corrupt == pytest.approx(corr, rel=1e-5, abs=1e-5)
    torch.testing.assert_close(result.patched, want, rtol=1e-4, atol=1e-4)
    # and the normalisation is the documented formula on those means
    torch.testing.assert_close(result.effect, (want - corr) / (clean - corr), rtol=1e-3, atol=1e-3)
    return result


@pytest.fixture(scope="module")
def induction():
    return scrub.zoo.load("induction-2l"), scrub.tasks.induction(n=24, seed=3)


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_zoo_model_every_kind_by_position_matches_hook_loop(induction, direction):
    model, data = induction
    corrupt = scrub.tasks.induction(n=24, seed=4).tokens
    # the first position, the last, and positions inside the repeated segments
    check_against_loop(model, data, corrupt, ["heads", "q", "k", "v", "resid"], direction, positions=[0, 14, 21, 27, 31])


@pytest.mark.parametrize("metric", ["target_logit", "cross_entropy", "kl_to_model"])
def test_mlp_model_matches_hook_loop(mlp_model, metric):
    data = random_dataset(n=16)
    corrupt = random_dataset(n=16, seed=7).tokens
    check_against_loop(mlp_model, data, corrupt, ["heads", "v", "mlp", "resid"], "denoise", metric)
    check_against_loop(mlp_model, data, corrupt, ["heads", "q", "mlp"], "noise", metric, positions="all")


@pytest.mark.parametrize(
    "overrides",
    [
        dict(positional_embedding_type="shortformer"),
        dict(normalization_type="LNPre"),
        dict(normalization_type=None, act_fn="relu"),
        dict(attention_dir="bidirectional"),
    ],
    ids=["shortformer", "LNPre", "no-norm", "bidirectional"],
)
def test_other_architectures_match_hook_loop(overrides):
    model = make_model(seed=5, **overrides)
    data = random_dataset(n=12)
    corrupt = random_dataset(n=12, seed=9).tokens
    check_against_loop(model, data, corrupt, ["heads", "k", "mlp"], "noise", "cross_entropy")


def test_paired_dataset_and_extras_give_the_same_sweep(mlp_model):
    data = random_dataset(n=16)
    other = random_dataset(n=16, seed=7, name="other")
    via_dataset = activation_patch(mlp_model, data, "heads", corrupt=other)
    via_extras = activation_patch(mlp_model, paired(data, other), "heads")
    assert CORRUPT_KEY in paired(data, other).extras
    torch.testing.assert_close(via_dataset.effect, via_extras.effect)


def test_identities_every_site_clean_is_clean_every_site_corrupt_is_corrupt(mlp_model):
    """Patching the whole residual stream of layer 0 (every input of every component) with the
    source run turns the base run into the source run: effect 1 when denoising, 0 when noising."""
    data = random_dataset(n=16)
    corrupt = random_dataset(n=16, seed=7).tokens
    for direction, expected in (("denoise", 1.0), ("noise", 0.0)):
        result = activation_patch(mlp_model, data, "resid", direction=direction, corrupt=corrupt)
        assert result.effect[0].item() == pytest.approx(expected, abs=1e-4)
        # the last layer's heads and MLP are direct: patching all of them plus the stream they read
        last = activation_patch(mlp_model, data, "resid", direction=direction, corrupt=corrupt, positions="all")
        assert last.sites[0].layer == 0


def test_feature_resampling_is_seeded_and_pools_seeds(induction):
    model, data = induction
    a = activation_patch(model, data, "heads", corrupt=Feature.any(), seeds=[1, 2])
    b = activation_patch(model, data, "heads", corrupt=Feature.any(), seeds=[1, 2])
    c = activation_patch(model, data, "heads", corrupt=Feature.any(), seeds=[3])
    assert a.n_rows == 2 * len(data) and c.n_rows == len(data)
    torch.testing.assert_close(a.effect, b.effect)
    assert not torch.allclose(a.effect, c.effect)


def test_induction_sweeps_find_the_known_heads(induction):
    """Noising: the previous-token head 0.3 is the one necessary head (the four induction heads
    back each other up). Denoising: the four induction heads are the four most sufficient."""
    model, data = induction
    noise = activation_patch(model, data, "heads", corrupt=Feature.any(), direction="noise", seeds=[0, 1])
    assert noise.top(1)[0].component == Head(0, 3)
    denoise = activation_patch(model, data, "heads", corrupt=Feature.any(), direction="denoise", seeds=[0, 1])
    assert {s.component for s in denoise.top(4)} == {Head(1, h) for h in range(4)}


def test_ratio_se_matches_a_direct_delta_method():
    g = torch.Generator().manual_seed(0)
    b = 1.0 + torch.rand(200, generator=g, dtype=torch.float64)
    a = 0.3 * b + 0.1 * torch.randn(200, generator=g, dtype=torch.float64)
    ratio, se = ratio_with_se(a[None], b)
    ma, mb = a.mean(), b.mean()
    cov = torch.cov(torch.stack([a, b]))
    var = (cov[0, 0] / mb**2 - 2 * ma * cov[0, 1] / mb**3 + ma**2 * cov[1, 1] / mb**4) / len(a)
    assert ratio.item() == pytest.approx((ma / mb).item())
    assert se.item() == pytest.approx(var.sqrt().item(), rel=1e-6)


def test_result_renders(mlp_model):
    data = random_dataset(n=8)
    corrupt = random_dataset(n=8, seed=7).tokens
    result = activation_patch(mlp_model, data, ["heads", "mlp"], corrupt=corrupt, positions=[0, 3])
    text = str(result)
    assert "Head(0.0)@0" in text and "MLP(1)@3" in text
    page = result.to_html()
    assert page.count("<svg") == 2 and "<script" not in page
    d = result.to_dict()
    assert len(d["cells"]) == len(result.sites) == (2 * 3 + 2) * 2
    import json

    assert json.loads(result.to_json())["direction"] == "denoise"
    assert result[result.sites[0]] == pytest.approx(float(result.effect[0]))


# ---- bad input: a ScrubError naming the rule, the offender and the fix, before any forward pass


@pytest.fixture
def no_forward(monkeypatch):
    from scrub.patching import activation as act_module

    monkeypatch.setattr(act_module.Passes, "__init__", lambda *a, **k: pytest.fail("ran a forward pass"))


def _bad_cases(attn_model):
    from scrub.data import Dataset

    data = random_dataset(n=8)
    other = random_dataset(n=8, seed=7)
    shorter = random_dataset(n=8, pos=5, seed=7)
    moved = Dataset(tokens=other.tokens, targets=other.targets, loss_mask=torch.roll(other.loss_mask, 1, 1), name="moved")
    big_vocab = Dataset(tokens=other.tokens + 50, targets=other.targets, loss_mask=other.loss_mask, name="other vocab")
    return data, [
        (dict(components="attention"), scrub.ComponentError, "unknown component family"),
        (dict(components=Head(0, 9)), scrub.ComponentError, "does not exist"),
        (dict(components=Head(4, 0)), scrub.ComponentError, "does not exist"),
        (dict(components=MLP(0)), scrub.ComponentError, "attention-only"),
        (dict(components="mlp"), scrub.ComponentError, "attention-only"),
        (dict(components=(Head(0, 0), "o")), scrub.ComponentError, "port"),
        (dict(components=[]), scrub.ComponentError, "empty"),
        (dict(positions=[0, 7]), scrub.DatasetError, "outside the context"),
        (dict(positions="every"), scrub.DatasetError, "'all', 'each'"),
        (dict(direction="forward"), scrub.ScrubError, "denoise"),
        (dict(corrupt="shuffle"), scrub.DatasetError, "neither|paired rows"),
        (dict(corrupt=shorter), scrub.DatasetError, "one for one"),
        (dict(corrupt=moved), scrub.DatasetError, "same positions"),
        (dict(corrupt=big_vocab), scrub.DatasetError, "vocabulary"),
        (dict(corrupt=Feature.token()), scrub.FeatureError, "per position"),
        (dict(corrupt=other, seeds=[0, 1]), scrub.ScrubError, "one seed"),
        (dict(corrupt=None), scrub.DatasetError, "carries no corrupted rows"),
        (dict(metric="perplexity"), scrub.MetricError, "unknown metric"),
        (dict(batch_rows=0), scrub.ScrubError, "batch_rows"),
    ], other


def test_bad_arguments_are_refused_before_any_forward_pass(attn_model, no_forward):
    data, cases, other = _bad_cases(attn_model)
    for overrides, error, words in cases:
        kw = dict(components="heads", corrupt=other)
        kw.update(overrides)
        with pytest.raises(error, match=words):
            activation_patch(attn_model, data, **kw)


# ---- property: any sweep equals the hook loop, and patching from the base run is the identity

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=5, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kinds=st.lists(st.sampled_from(["heads", "q", "k", "v", "mlp", "resid"]), min_size=1, max_size=3, unique=True),
    positions=st.one_of(st.just("all"), st.lists(st.integers(0, 6), min_size=1, max_size=3, unique=True)),
    direction=st.sampled_from(["denoise", "noise"]),
    seed=st.integers(0, 50),
)
def test_property_any_sweep_matches_the_hook_loop(mlp_model, kinds, positions, direction, seed):
    data = random_dataset(n=6, seed=seed)
    corrupt = random_dataset(n=6, seed=seed + 100).tokens
    check_against_loop(mlp_model, data, corrupt, kinds, direction, "cross_entropy", positions=positions)


@settings(max_examples=4, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(["heads", "q", "k", "v", "mlp", "resid"]), min_size=1, max_size=6, unique=True),
       seed=st.integers(0, 50))
def test_property_patching_a_run_with_itself_changes_nothing(mlp_model, kinds, seed):
    data = random_dataset(n=6, seed=seed)
    result = activation_patch(mlp_model, data, kinds, corrupt=data.tokens, metric="target_logit", positions="each")
    torch.testing.assert_close(result.patched, torch.full_like(result.patched, result.clean), rtol=1e-5, atol=1e-5)


def test_a_narrow_corruption_lets_both_sweeps_find_the_previous_token_head():
    """With every other token of the first copy re-drawn (hypotheses/explore_induction.py
    `previous_token_pairs`), the previous-token head 0.3 is both the most necessary head (noising)
    and the most sufficient one (denoising), and induction head 1.0 follows it in both."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "hypotheses" / "explore_induction.py"
    spec = importlib.util.spec_from_file_location("explore_induction_for_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model, data = scrub.zoo.load("induction-2l"), module.previous_token_pairs(n=128, seed=0)
    for direction in ("denoise", "noise"):
        result = activation_patch(model, data, "heads", direction=direction)
        assert [s.component for s in result.top(2)] == [Head(0, 3), Head(1, 0)], direction
