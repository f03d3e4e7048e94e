"""Search against circuits known by construction (`scrub.zoo.known`): from `Hypothesis.full`, the
walk must find exactly the true edges (precision and recall 1.0) at a tau between the largest
effect of an edge the model does not use (zero) and the smallest effect of one it does."""

from __future__ import annotations

import pytest
import torch

import scrub
from scrub import Hypothesis
from scrub.errors import ScrubError
from scrub.search import search
from scrub.zoo import known

# one thread; and a HookedTransformer (the oracle is TransformerLens hooks / the models are HookedTransformers)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.requires_hooked]


def _precision_recall(found: frozenset, true: frozenset) -> tuple[float, float]:
    hit = len(found & true)
    return (hit / len(found) if found else 1.0), hit / len(true)


@pytest.mark.parametrize("name", known.available())
def test_the_model_solves_its_task(name):
    kc = known.get(name)
    model, data = kc.model(), kc.data(64)
    logits = model(data.tokens)  # [n, pos, vocab]
    picked = logits.argmax(-1)[data.loss_mask]
    assert torch.equal(picked, data.targets[data.loss_mask])


@pytest.mark.parametrize("name", known.available())
def test_search_from_full_recovers_the_true_edges(name):
    kc = known.get(name)
    model, data = kc.model(), kc.data(128)
    res = search(Hypothesis.full(model), model, data, tau=0.05, taus=[0.0, 0.001, 0.5, 1.5])
    scores = {p.tau: _precision_recall(known.visible_edges(p.hypothesis), kc.edges) for p in res.curve}
    assert scores[0.05] == (1.0, 1.0)
    assert scores[0.001] == (1.0, 1.0) and scores[0.5] == (1.0, 1.0)
    # tau 0 keeps every edge (no removal lowers LR by < 0): recall 1, precision low
    assert scores[0.0][1] == 1.0 and scores[0.0][0] < 0.5
    # a tau above any possible drop removes true edges too
    assert scores[1.5][1] < 1.0
    assert res.loss_recovered == pytest.approx(1.0, abs=1e-3)


def test_unknown_name():
    with pytest.raises(ScrubError, match="available"):
        known.load("nope")


@pytest.mark.slow
def test_search_on_the_trained_induction_model_matches_the_refined_hypothesis():
    """From the whole model, with the refined hypothesis's features as candidates, the search finds a
    hypothesis at least as good as the hand-written refined one: no more edges, and loss recovered no
    lower (beyond twice the SE). Pruning alone cannot grow the naive hypothesis (it can only remove
    what it claims), so the start is `Hypothesis.full`; the naive hypothesis is the floor."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("induction_hyps", Path(__file__).parents[1] / "hypotheses" / "induction.py")
    ind = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ind)
    model, data = ind.model(), ind.dataset(n=128)
    # candidates for the embeddings and layer-0 heads (leaves); coarsening a claim with children to a
    # per-position feature treeifies it per position (32 copies here), too costly to try on layer 1
    l0 = [ind.TOKEN_AND_PREVIOUS, scrub.Feature.prev_token(), scrub.Feature.token()]
    features = {scrub.Embed(): [scrub.Feature.token()], **{scrub.Head(0, h): l0 for h in range(4)}}
    res = search(Hypothesis.full(model), model, data, tau=0.01, features=features, seeds=1)
    naive, refined = scrub.evaluate_many([ind.naive(), ind.refined()], model, data, seeds=1)
    assert len(res.hypothesis.edges) <= len(ind.refined().edges)
    assert res.loss_recovered >= refined.loss_recovered - 2 * max(res.stderr, refined.stderr)
    assert res.loss_recovered > naive.loss_recovered
