"""`propose`: sweeps on the zoo's induction model give back its known circuit, which
`scrub.evaluate` then scores; and the generated code rebuilds the same hypothesis."""

from __future__ import annotations

import pytest
import scrub
from scrub import Feature, Head
from scrub.errors import ScrubError
from scrub.patching import activation_patch
from scrub.patching.path import path_patch
from scrub.patching.propose import as_code, propose
from conftest import random_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

INDUCTION = [Head(1, h) for h in range(4)]


@pytest.fixture(scope="module")
def induction_paths():
    model = scrub.zoo.load("induction-2l")
    data = scrub.tasks.induction(n=96, seed=5)
    kw = dict(corrupt=Feature.any(), direction="noise", seeds=[0])
    paths = [path_patch(model, data, "heads", "logits", **kw)]
    paths += [path_patch(model, data, "heads", [(head, "k")], **kw) for head in INDUCTION]
    return model, data, paths


def edges_of(h):
    return {(e.child.component, "out" if e.parent is h.root else e.parent.component, e.port) for e in h.edges}


def test_propose_returns_the_known_induction_circuit_which_evaluate_scores(induction_paths):
    model, data, paths = induction_paths
    h = propose(*paths, threshold=0.1)
    want = {(head, "out", "in") for head in INDUCTION} | {(Head(0, 3), head, "k") for head in INDUCTION}
    assert edges_of(h) == want
    result = scrub.evaluate(h, model, data, seeds=1)
    # the circuit explains part of the behaviour (its q and v ports are resampled: Redwood's
    # naive induction hypothesis), more than the output alone and less than the whole model
    assert result.m_model < result.m_scrub < result.m_base
    assert 0.0 < result.loss_recovered < 1.0


def test_generated_code_rebuilds_the_hypothesis(induction_paths):
    _, _, paths = induction_paths
    h = propose(*paths, threshold=0.1)
    namespace: dict = {}
    exec(as_code(h), namespace)  # noqa: S102  (the code propose prints for the user)
    rebuilt = namespace["proposed"]()
    assert edges_of(rebuilt) == edges_of(h)


def test_activation_results_claim_components_into_the_output(mlp_model):
    data = random_dataset(n=12)
    corrupt = random_dataset(n=12, seed=7).tokens
    result = activation_patch(mlp_model, data, ["heads", "mlp"], corrupt=corrupt)
    threshold = float(result.importance.median())
    h = propose(result, threshold=threshold)
    chosen = {s.component for s, imp in zip(result.sites, result.importance.tolist()) if imp > threshold}
    assert {c.component for c in h.claims[1:]} == chosen
    assert all(e.parent is h.root for e in h.edges)


def test_bad_proposals_are_refused(mlp_model):
    data = random_dataset(n=8)
    result = activation_patch(mlp_model, data, "heads", corrupt=random_dataset(n=8, seed=7).tokens)
    with pytest.raises(ScrubError, match="at least one"):
        propose()
    with pytest.raises(ScrubError, match="PatchingResult"):
        propose("heads")
    with pytest.raises(ScrubError, match="threshold"):
        propose(result, threshold="high")
    with pytest.raises(ScrubError, match="passes threshold"):
        propose(result, threshold=1e9)


@pytest.mark.slow
def test_explore_writes_the_sweeps_and_proposes_the_induction_circuit(tmp_path):
    from scrub.patching.explore import explore

    model = scrub.zoo.load("induction-2l")
    data = scrub.tasks.induction(n=96, seed=5)
    found = explore(model, data, tmp_path, corrupt=Feature.any(), threshold=0.12)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "denoise.html", "denoise.json", "noise.html", "noise.json", "paths.json", "proposed.py"]
    edges = edges_of(found.proposal)
    assert {(head, "out", "in") for head in INDUCTION} <= edges
    assert {(Head(0, 3), head, "k") for head in INDUCTION} <= edges
    assert "Head(0, 3)" in found.code
