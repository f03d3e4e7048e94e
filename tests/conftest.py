"""Shared fixtures: tiny seeded TransformerLens models and random datasets.

Every parameter of the models (biases and LayerNorm weights included; TransformerLens initialises
biases to zero) is overwritten from a seeded generator, so no test depends on global RNG state.
Model construction is slowish, so the models are built once per session; tests that need to modify
a model copy it first (`copy_model`).
"""

from __future__ import annotations

import copy
import warnings
from typing import Optional

import pytest
import torch

from scrub import Dataset
from scrub.tlcompat import hooked_transformer_available, transformer_lens_version

# ---- the two TransformerLens lines (3.x: HookedTransformer; 4.x: TransformerBridge only) ---------
# `@pytest.mark.requires_hooked` (or `pytestmark = pytest.mark.requires_hooked`) marks a test that
# needs a HookedTransformer; under TransformerLens 4 it is skipped with the reason below. Tests that
# use the HookedTransformer fixtures (`HOOKED_FIXTURES`) are marked automatically. An unmarked test
# that builds one anyway fails loudly (`make_model` raises NeedsHookedTransformerError).
# `@pytest.mark.zoo_api` marks a test that runs a zoo model through scrub's public API (evaluate,
# report, the CLI): under TransformerLens 4 the zoo model is a HuggingFace GPT-2, which the API
# takes once the model view reads HF models (`ModelView.from_model`); skipped until then.
# `@pytest.mark.tl4_only` marks a test of the TransformerLens 4 bridge path (skipped under 3.x).
HOOKED = hooked_transformer_available()
HOOKED_FIXTURES = frozenset({"attn_model", "mlp_model", "any_model"})
REQUIRES_HOOKED = (
    f"needs a TransformerLens HookedTransformer, which TransformerLens {transformer_lens_version()} does not have "
    f"(removed in 4.0); runs on the TransformerLens 3 line (make test)"
)


def _api_takes_hf_models() -> bool:
    from scrub.model.view import ModelView

    return hasattr(ModelView, "from_model")


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_hooked: needs a HookedTransformer (skipped under TransformerLens 4)")
    config.addinivalue_line("markers", "zoo_api: a zoo model through scrub's API (TL4: needs ModelView.from_model)")
    config.addinivalue_line("markers", "tl4_only: the TransformerLens 4 bridge path (skipped under TransformerLens 3)")


def pytest_collection_modifyitems(config, items):
    hf_api = HOOKED or _api_takes_hf_models()
    for item in items:
        if not HOOKED and (item.get_closest_marker("requires_hooked") or HOOKED_FIXTURES & set(item.fixturenames)):
            item.add_marker(pytest.mark.skip(reason=REQUIRES_HOOKED))
        elif not hf_api and item.get_closest_marker("zoo_api"):
            item.add_marker(pytest.mark.skip(
                reason="under TransformerLens 4 the zoo model is a HuggingFace GPT-2; scrub's API takes it once "
                       "the model view reads HuggingFace models (ModelView.from_model)"))
        if HOOKED and item.get_closest_marker("tl4_only"):
            item.add_marker(pytest.mark.skip(reason="tests the TransformerLens 4 line (make test-tl4)"))

# Sizes shared by the suite: small enough that a full scrub takes milliseconds on a CPU.
D_VOCAB = 10
N_CTX = 8
N_LAYERS = 2
N_HEADS = 3
D_MODEL = 24
D_HEAD = 8
N_ROWS = 48
N_POS = 7  # datasets use fewer positions than n_ctx, so "positions out of range" has two limits


def perturb(model, seed: int):
    """Overwrite EVERY parameter of ``model`` with seeded noise (in place) and return it in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            leaf = name.split(".")[-1]
            if leaf == "w":  # LayerNorm gain
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1 or leaf.startswith("b") or leaf.startswith("_b"):  # biases, LN shifts
                p.copy_(0.3 * noise)
            else:  # weight matrices, scaled by fan-in
                p.copy_(noise / p.shape[-2] ** 0.5)
    return model.eval()


def make_model(seed: int = 0, **overrides):
    """A tiny random ``HookedTransformer`` (LN, learned positions, causal) with every weight perturbed."""
    from scrub.tlcompat import require_hooked_transformer

    HookedTransformer = require_hooked_transformer("conftest.make_model (mark the test requires_hooked)")
    from transformer_lens import HookedTransformerConfig

    kwargs = dict(
        n_layers=N_LAYERS,
        d_model=D_MODEL,
        n_heads=N_HEADS,
        d_head=D_HEAD,
        d_mlp=4 * D_MODEL,
        d_vocab=D_VOCAB,
        n_ctx=N_CTX,
        act_fn="gelu",
        normalization_type="LN",
        device="cpu",
        seed=seed,
        init_weights=False,  # `perturb` sets every weight; no global RNG
    )
    kwargs.update(overrides)
    if kwargs.get("attn_only"):
        kwargs.pop("d_mlp", None)
        kwargs["act_fn"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TL 3.9 deprecates HookedTransformer construction
        model = HookedTransformer(HookedTransformerConfig(**kwargs))
    return perturb(model, seed)


def copy_model(model):
    """A deep copy (tests that zero weights must not touch the shared session models)."""
    return copy.deepcopy(model).eval()


def random_dataset(n: int = N_ROWS, pos: int = N_POS, vocab: int = D_VOCAB, seed: int = 1, name: str = "random") -> Dataset:
    """Random tokens; targets = the next token; every position scored except the last."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n, pos), generator=g)
    targets = torch.full_like(tokens, -1)
    targets[:, :-1] = tokens[:, 1:]
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, -1] = False
    return Dataset(tokens=tokens, targets=targets, loss_mask=mask, name=name)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls run far slower multi-threaded on a busy 2-core machine; restored after the module.

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def attn_model():
    """Attention-only, 2 layers x 3 heads, LayerNorm, learned positions."""
    return make_model(seed=0, attn_only=True)


@pytest.fixture(scope="session")
def mlp_model():
    """2 layers x 3 heads with GELU MLPs, LayerNorm, learned positions."""
    return make_model(seed=1, attn_only=False)


@pytest.fixture(scope="session", params=["attn_only", "mlp"])
def any_model(request, attn_model, mlp_model):
    return attn_model if request.param == "attn_only" else mlp_model


@pytest.fixture(scope="session")
def data() -> Dataset:
    return random_dataset()


def writers(model, include_pos: bool = True) -> list:
    """Every component that writes directly into the residual stream of ``model``."""
    from scrub import MLP, Embed, Head, PosEmbed

    cfg = model.cfg
    out = [Embed()] + ([PosEmbed()] if include_pos else [])
    for layer in range(cfg.n_layers):
        out += [Head(layer, h) for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            out.append(MLP(layer))
    return out


def full_exact(model, name: str = "full exact", skip: Optional[set] = None):
    """The hypothesis "every direct input of the output carries everything" (EXACT leaves)."""
    from scrub import EXACT, Hypothesis

    h = Hypothesis(name)
    out = h.output()
    for component in writers(model):
        if skip and component in skip:
            continue
        h.claim(component, EXACT, into=out)
    return h


# ---- schedule checks shared by the sampling and property tests ---------------------------------


def assert_schedule_consistent(schedule) -> int:
    """Check every datum of ``schedule`` against DESIGN.md section 1; return the number of nodes.

    * the root's datum is the reference rows; every row index is in range;
    * a child's datum agrees with its parent's datum on the child's feature (per row, or per
      (row, position) for a per-position feature); EXACT children hold the parent's datum;
    * leaves have no "other" datum; nodes with children have one per row;
    * a per-position node with children has one copy per position its edge reads, each copy
      holding the column of the node's datum for that position.

    Features are re-evaluated here with their own ``fn`` (not scrub's class ids).
    """
    data = schedule.dataset
    n_data, n_pos = len(data), data.n_pos
    n = schedule.n_rows
    assert torch.equal(schedule.root.datum, schedule.reference)
    values_of: dict[int, torch.Tensor] = {}
    count = 0

    def in_range(t: torch.Tensor) -> None:
        assert t.dtype == torch.long
        assert int(t.min()) >= 0 and int(t.max()) < n_data

    def expanded(node, datum: torch.Tensor) -> None:
        nonlocal count
        count += 1
        assert datum.shape == (n,)
        assert node.copies is None
        assert node.other is not None and node.other.shape == (n,)
        in_range(node.other)
        assert len(node.children) > 0 or node.is_root
        for child in node.children:
            assert child.edge.parent is node.claim
            check_child(child, datum)

    def check_child(child, parent_datum: torch.Tensor) -> None:
        nonlocal count
        feature = child.claim.feature
        in_range(child.datum)
        if feature.exact:
            assert torch.equal(child.datum, parent_datum), f"EXACT child {child.claim} must hold its parent's datum"
        else:
            key = id(feature)
            if key not in values_of:
                values_of[key] = feature.fn(data)
            values = values_of[key]
            if values.ndim == 1:
                assert child.datum.shape == (n,)
                assert torch.equal(values[child.datum], values[parent_datum]), f"{child.claim} disagrees on {feature}"
            else:
                assert child.datum.shape == (n, n_pos)
                cols = torch.arange(n_pos)
                assert torch.equal(values[child.datum, cols], values[parent_datum]), (
                    f"{child.claim} disagrees on per-position {feature}")
        if child.is_leaf:
            count += 1
            assert child.other is None and child.copies is None and child.children == ()
        elif child.per_position:
            count += 1
            assert child.other is None and child.children == ()
            wanted = list(range(n_pos)) if child.edge.positions is None else list(child.edge.positions)
            assert sorted(child.copies) == wanted
            for t, copy in child.copies.items():
                assert copy.claim is child.claim and copy.edge is child.edge
                assert torch.equal(copy.datum, child.datum[:, t])
                expanded(copy, copy.datum)
        else:
            expanded(child, child.datum)

    expanded(schedule.root, schedule.root.datum)
    return count


def schedule_tensors(schedule) -> list:
    """Every tensor of a schedule, in walk order (for bit-for-bit comparisons)."""
    out = [schedule.reference]
    for node in schedule.nodes():
        out.append(node.datum)
        out.append(node.other if node.other is not None else torch.empty(0))
    return out


def two_small_hypotheses(prev_head: tuple[int, int] = (0, 2), token=None) -> list:
    """Two hypotheses of a 2-layer model (the store, sweep and Ray tests' grid): "two heads" (1.0
    and 1.1 into the logits) and "head 1.0 naive" (its q reads ``token``, default the current
    token; its k reads head ``prev_head`` by the previous token)."""
    from scrub import EXACT, Embed, Feature, Head, Hypothesis

    a = Hypothesis("two heads")
    out = a.output()
    a.claim(Head(1, 0), EXACT, into=out)
    a.claim(Head(1, 1), EXACT, into=out)
    b = Hypothesis("head 1.0 naive")
    out = b.output()
    ind = b.claim(Head(1, 0), EXACT, into=out)
    b.claim(Embed(), token or Feature.token(), into=(ind, "q"))
    b.claim(Head(*prev_head), Feature.prev_token(), into=(ind, "k"))
    return [a, b]
