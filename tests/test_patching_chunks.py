"""Sweeps in row slices (`scrub.patching.chunks`): a memory budget too small for every row at once
makes activation, path and attribution patching run slices of rows, each with its own stored
passes, and every number (effects, standard errors, means) equals the sweep in one piece."""

from __future__ import annotations

import pytest
import torch

import scrub
from scrub import Feature, Head
from scrub.patching import activation as act_module
from scrub.patching import chunks
from scrub.patching import activation_patch, attribution_patch, path_patch
from conftest import random_dataset
from families import VOCAB, make_hf_model

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS_PER_SLICE = 3


@pytest.fixture
def sliced(monkeypatch):
    """A budget of 16 MB holds ROWS_PER_SLICE rows; counts the slices each sweep ran."""
    counts = []
    real = chunks.row_parts

    def spy(inputs, budget_mb, passes=2):
        parts = real(inputs, budget_mb, passes)
        counts.append(len(parts))
        return parts

    monkeypatch.setattr(chunks, "bytes_per_row", lambda view, n_pos, passes=2: 16 * 2**20 // ROWS_PER_SLICE)
    monkeypatch.setattr(act_module, "row_parts", spy)
    return counts


def assert_same(a, b):
    assert a.sites == b.sites and a.n_rows == b.n_rows
    torch.testing.assert_close(a.patched, b.patched, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.effect, b.effect, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.se, b.se, rtol=1e-4, atol=1e-5)
    assert a.clean == pytest.approx(b.clean, rel=1e-6) and a.corrupt == pytest.approx(b.corrupt, rel=1e-6)


@pytest.fixture(scope="module")
def setting():
    model = make_hf_model("llama", seed=7)
    data = random_dataset(n=8, pos=6, vocab=VOCAB, seed=31)
    corrupt = random_dataset(n=8, pos=6, vocab=VOCAB, seed=32).tokens
    return model, data, corrupt


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_activation_patching_in_slices_equals_one_piece(setting, sliced, direction):
    model, data, corrupt = setting
    kw = dict(corrupt=corrupt, direction=direction, metric="target_logit")
    for kinds, positions in ((["heads", "resid"], "each"), (["k", "v", "mlp"], "all")):
        whole = activation_patch(model, data, kinds, positions=positions, memory_budget_mb=4096, **kw)
        parts = activation_patch(model, data, kinds, positions=positions, memory_budget_mb=16, **kw)
        assert sliced[-2:] == [1, 3]  # 8 rows: one piece, then slices of 3, 3, 2
        assert_same(parts, whole)


def test_resampled_partners_are_drawn_before_slicing(setting, sliced):
    model, data, _ = setting
    kw = dict(corrupt=Feature.any(), seeds=[4], metric="target_logit", positions="each")
    whole = activation_patch(model, data, "heads", memory_budget_mb=None, **kw)
    parts = activation_patch(model, data, "heads", memory_budget_mb=16, **kw)
    assert sliced[-1] == 3
    assert_same(parts, whole)


def test_path_patching_in_slices_equals_one_piece(setting, sliced):
    model, data, corrupt = setting
    receivers = [(Head(1, 0), "k"), (Head(1, 1), "q")]
    whole = path_patch(model, data, "heads", receivers, corrupt=corrupt, direction="noise", memory_budget_mb=4096)
    parts = path_patch(model, data, "heads", receivers, corrupt=corrupt, direction="noise", memory_budget_mb=16)
    assert sliced[-1] == 3
    assert_same(parts, whole)


def test_attribution_patching_in_slices_equals_one_piece(setting, sliced):
    model, data, corrupt = setting
    kw = dict(corrupt=corrupt, metric="target_logit", positions="each", qk_fix=True, compare=True)
    whole = attribution_patch(model, data, ["heads", "q", "k"], memory_budget_mb=4096, **kw)
    parts = attribution_patch(model, data, ["heads", "q", "k"], memory_budget_mb=16, **kw)
    assert sliced[-2:] == [3, 3]  # the estimates, then the exact sweep they are compared with
    assert_same(parts, whole)
    assert parts.agreement["pearson"] == pytest.approx(whole.agreement["pearson"], abs=1e-6)


def test_bytes_per_row_counts_every_stored_activation():
    """A GPT-2-shaped model (3 layers, 4 heads, d_model 32, vocabulary 100) in float32 at 10
    positions, by hand: per layer 4 * 32 (streams and outputs) + 4 * 32 (heads' outputs)
    + 3 * 4 * 8 (q, k, v) = 352 numbers; 3 layers + 3 * 32 (embeddings, final stream) + 100
    logits a position; two passes of 4-byte numbers."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from scrub.model import ModelView

    torch.manual_seed(0)
    view = ModelView.from_model(GPT2LMHeadModel(GPT2Config(n_layer=3, n_head=4, n_embd=32, vocab_size=100, n_positions=16)))
    per_position = 3 * 352 + 3 * 32 + 100
    assert chunks.bytes_per_row(view, 10) == 2 * 10 * per_position * 4
    assert chunks.bytes_per_row(view, 10, passes=4) == 4 * 10 * per_position * 4


@pytest.mark.parametrize("budget", [0, 8, -1.0, float("nan"), "1GB", True])
def test_a_bad_budget_is_refused_before_any_forward_pass(setting, monkeypatch, budget):
    model, data, corrupt = setting
    monkeypatch.setattr(act_module.Passes, "__init__", lambda *a, **k: pytest.fail("ran a forward pass"))
    for sweep in (lambda: activation_patch(model, data, "heads", corrupt=corrupt, memory_budget_mb=budget),
                  lambda: path_patch(model, data, "heads", "logits", corrupt=corrupt, memory_budget_mb=budget),
                  lambda: attribution_patch(model, data, "heads", corrupt=corrupt, memory_budget_mb=budget)):
        with pytest.raises(scrub.ScrubError, match="memory_budget_mb"):
            sweep()
