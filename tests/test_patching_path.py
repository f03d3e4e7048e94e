"""Path patching against a two-step TransformerLens hook loop (Wang et al. 2022), independent of
the model view: per sender, (1) one run per receiving head with the sender's delta added to that
head's port input (split q/k/v inputs), capturing the head's result; (2) a run of the base tokens
with every receiver's result fixed to the captured value and the delta added to the final stream
for the "logits" receiver."""

from __future__ import annotations

import copy

import pytest
import torch

import scrub
from scrub import MLP, Head
from scrub.errors import ComponentError
from scrub.metrics import resolve
from scrub.patching.path import path_patch
from conftest import random_dataset

# one thread; and a HookedTransformer (the oracle is TransformerLens hooks / the models are HookedTransformers)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.requires_hooked]


def hooked_path_patch(model, data, corrupt, senders, receivers, direction, metric):
    model = copy.deepcopy(model)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    if not model.cfg.attn_only:
        model.set_use_hook_mlp_in(True)
    metric = resolve(metric)
    base, source = (corrupt, data.tokens) if direction == "denoise" else (data.tokens, corrupt)
    with torch.no_grad():
        _, base_cache = model.run_with_cache(base)
        _, src_cache = model.run_with_cache(source)
    L = model.cfg.n_layers
    out = []
    for s in senders:
        if isinstance(s, Head):
            name, idx = f"blocks.{s.layer}.attn.hook_result", (slice(None), slice(None), s.head)
        else:
            name, idx = f"blocks.{s.layer}.hook_mlp_out", (slice(None),)
        delta = src_cache[name][idx] - base_cache[name][idx]
        fixed = []
        for component, port in receivers:
            if component == "logits":
                continue
            if isinstance(component, Head):
                if any(f[0] == component for f in fixed):
                    continue  # one run per head, every port it receives on at once
                upstream = s.layer < component.layer
                ports = [p for c, p in receivers if c == component]

                def add(act, hook, h=component.head, up=upstream):
                    if up:
                        act[:, :, h] = act[:, :, h] + delta
                    return act

                captured = {}
                result_name = f"blocks.{component.layer}.attn.hook_result"

                def grab(act, hook, h=component.head):
                    captured["v"] = act[:, :, h].clone()

                adds = [(f"blocks.{component.layer}.hook_{p}_input", add) for p in ports]
                with torch.no_grad():
                    model.run_with_hooks(base, fwd_hooks=adds + [(result_name, grab)])
                fixed.append((component, result_name, component.head, captured["v"]))
            else:
                upstream = s.layer < component.layer or (isinstance(s, Head) and s.layer == component.layer)
                captured = {}

                def add_in(act, hook, up=upstream):
                    return act + delta if up else act

                def grab_out(act, hook):
                    captured["v"] = act.clone()

                with torch.no_grad():
                    model.run_with_hooks(base, fwd_hooks=[(f"blocks.{component.layer}.hook_mlp_in", add_in),
                                                          (f"blocks.{component.layer}.hook_mlp_out", grab_out)])
                fixed.append((component, f"blocks.{component.layer}.hook_mlp_out", None, captured["v"]))
        hooks = []
        for _, name_, head, value in fixed:
            def put(act, hook, head=head, value=value):
                if head is None:
                    return value
                act[:, :, head] = value
                return act

            hooks.append((name_, put))
        if any(c == "logits" for c, _ in receivers):
            hooks.append((f"blocks.{L - 1}.hook_resid_post", lambda act, hook: act + delta))
        with torch.no_grad():
            logits = model.run_with_hooks(base, fwd_hooks=hooks)
        out.append(float(metric(logits, data).mean()))
    return torch.tensor(out, dtype=torch.float64)


def test_induction_senders_into_induction_keys_match_hook_loop():
    model = scrub.zoo.load("induction-2l")
    data = scrub.tasks.induction(n=16, seed=3)
    corrupt = scrub.tasks.induction(n=16, seed=4).tokens
    receivers = [(Head(1, h), "k") for h in range(4)]
    result = path_patch(model, data, "heads", receivers, corrupt=corrupt, direction="denoise")
    assert [s.component for s in result.sites] == [Head(0, h) for h in range(4)]  # layer 1 cannot send to layer 1
    want = hooked_path_patch(model, data, corrupt, [Head(0, h) for h in range(4)], receivers, "denoise", "target_logit")
    torch.testing.assert_close(result.patched, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_mlp_model_mixed_receivers_match_hook_loop(mlp_model, direction):
    data = random_dataset(n=12)
    corrupt = random_dataset(n=12, seed=7).tokens
    receivers = [(Head(1, 0), "q"), (Head(1, 0), "v"), (Head(1, 2), "k"), (MLP(1), "in"), "logits"]
    senders = [Head(0, 1), MLP(0), Head(1, 1)]
    result = path_patch(mlp_model, data, senders, receivers, corrupt=corrupt, direction=direction, metric="cross_entropy")
    want = hooked_path_patch(mlp_model, data, corrupt, senders, [r if r != "logits" else ("logits", "") for r in receivers], direction, "cross_entropy")
    torch.testing.assert_close(result.patched, want, rtol=1e-4, atol=1e-4)


def test_path_into_logits_alone_is_the_direct_effect(mlp_model):
    """Into the logits only, a last-layer head's path effect equals patching its output."""
    from scrub.patching import activation_patch

    data = random_dataset(n=12)
    corrupt = random_dataset(n=12, seed=7).tokens
    path = path_patch(mlp_model, data, Head(1, 2), "logits", corrupt=corrupt, metric="target_logit")
    # patching the head's output also changes MLP(1)'s input; with MLP(1) held fixed they agree
    full = path_patch(mlp_model, data, Head(1, 2), ["logits", (MLP(1), "in")], corrupt=corrupt, metric="target_logit")
    act = activation_patch(mlp_model, data, Head(1, 2), corrupt=corrupt, metric="target_logit")
    torch.testing.assert_close(full.patched, act.patched, rtol=1e-4, atol=1e-4)
    assert path.sites == full.sites


def test_bad_receivers_are_refused_before_running(mlp_model, monkeypatch):
    data = random_dataset(n=4)
    corrupt = random_dataset(n=4, seed=7).tokens
    from scrub.patching import activation as act_module

    monkeypatch.setattr(act_module.Passes, "__init__", lambda *a, **k: pytest.fail("ran a forward pass"))
    for receivers, words in [
        ([(Head(1, 0), "z")], "port"),
        ([(Head(5, 0), "q")], "does not exist"),
        ([(MLP(1), "q")], "port"),
        ([], "empty"),
        ([(Head(0, 0), "q")], "upstream"),
    ]:
        with pytest.raises(ComponentError, match=words):
            path_patch(mlp_model, data, [Head(0, 1)], receivers, corrupt=corrupt)
