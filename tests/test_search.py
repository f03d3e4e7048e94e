"""`scrub.search`: the walk, its decisions, its result's forms, and bad input."""

from __future__ import annotations

import json

import pytest

import scrub
from scrub import EXACT, Embed, Feature, Head, Hypothesis
from scrub.errors import ComponentError, OptionsError, ScrubError
from scrub.search import Coarsen, RemoveEdge, SearchResult, apply, search

pytestmark = pytest.mark.usefixtures("one_thread")


def _shape(h: Hypothesis):
    claims = [(c.name, c.component, str(c.feature), c.scrub_inputs) for c in h.claims]
    edges = sorted((e.child.name, e.parent.name, e.port, e.positions or ()) for e in h.edges)
    return claims, edges


FIRST = Feature("first token", lambda d: d.tokens[:, 0])  # per row: no per-position treeification


@pytest.fixture(scope="module")
def found(attn_model, data) -> SearchResult:
    return search(attn_model, attn_model, data, tau=0.05, taus=[0.01, 0.2], features=[FIRST], seeds=2)


def test_decisions_follow_the_rule(found):
    assert found.decisions, "the walk tried nothing"
    for d in found.decisions:
        if d.kept:
            assert d.lr_before - d.lr_after < found.tau
        elif d.reason.startswith("drops"):
            assert d.lr_before - d.lr_after >= found.tau
    # kept decisions chain: each step starts where the last kept change left LR
    assert len(found.hypothesis.edges) < len(found.start.edges)
    assert found.start_result.loss_recovered == pytest.approx(1.0, abs=1e-3)


def test_found_result_is_what_evaluate_says(found, attn_model, data):
    again = scrub.evaluate(found.hypothesis, attn_model, data, seeds=2)
    assert again.loss_recovered == pytest.approx(found.loss_recovered, rel=1e-5, abs=1e-6)
    last_kept = [d for d in found.decisions if d.kept][-1]
    assert last_kept.lr_after == pytest.approx(found.loss_recovered, rel=1e-4, abs=1e-5)


def test_curve_has_every_tau_and_shrinks(found):
    taus = [p.tau for p in found.curve]
    assert taus == [0.01, 0.05, 0.2]
    point = next(p for p in found.curve if p.tau == found.tau)
    assert point.edges == len(found.hypothesis.edges)
    assert point.loss_recovered == pytest.approx(found.loss_recovered)


def test_to_python_rebuilds_the_found_hypothesis(found):
    code = found.to_python()
    space: dict = {}
    exec(compile(code, "<found>", "exec"), space)
    assert any(c.feature is FIRST for c in found.hypothesis.claims[1:]), "no coarsening kept: the test is void"
    rebuilt = space["found"]({"first token": FIRST})
    assert _shape(rebuilt) == _shape(found.hypothesis)
    assert rebuilt.shape == found.hypothesis.shape == found.start.shape is not None  # same draws


def test_json_and_html(found, tmp_path):
    data = json.loads(found.to_json())
    assert data["found"]["loss_recovered"] == pytest.approx(found.loss_recovered)
    assert len(data["found"]["edges"]) == len(found.hypothesis.edges)
    assert sum(len(s["decisions"]) for s in data["steps"]) == len(found.decisions)
    page = found.to_html()
    assert page.count("<svg") == 1 and "Decisions" in page
    assert found.to_html(tmp_path / "s.html").read_text() == page
    assert "found:" in str(found)


def test_apply_removes_and_coarsens():
    h = Hypothesis("h")
    out = h.output()
    a = h.claim(Head(1, 0), EXACT, into=out)
    h.claim(Embed(), EXACT, into=[(a, "q"), (a, "k")])
    g = apply(h, [RemoveEdge("Embed", "Head(1.0)", "q"), Coarsen("Embed", Feature.token())])
    assert [(x.port) for x in g.edges if x.child.name == "Embed"] == ["k"]
    assert g.find("Embed").feature.name == "token" and h.find("Embed").feature is EXACT
    # the last edge into a claim: the claim keeps its meaning, its inputs are resampled
    g2 = apply(h, [RemoveEdge("Embed", "Head(1.0)", "q"), RemoveEdge("Embed", "Head(1.0)", "k")])
    assert g2.find("Head(1.0)").scrub_inputs and len(g2.claims) == 2
    with pytest.raises(ScrubError, match="no such edge"):
        apply(h, [RemoveEdge("Embed", "Head(1.0)", "v")])


@pytest.mark.parametrize("tau", [-0.1, float("nan"), "0.1", float("inf"), True])
def test_bad_tau(attn_model, data, tau):
    with pytest.raises(OptionsError, match="tau"):
        search(attn_model, attn_model, data, tau=tau)


def test_bad_features(attn_model, data):
    with pytest.raises(OptionsError, match="empty"):
        search(attn_model, attn_model, data, features=[])
    with pytest.raises(OptionsError, match="other than EXACT"):
        search(attn_model, attn_model, data, features=[EXACT])


def test_start_from_another_model(attn_model, data):
    h = Hypothesis("bigger")
    h.claim(Head(5, 0), EXACT, into=h.output())
    with pytest.raises(ComponentError, match="layers"):
        search(h, attn_model, data)
    with pytest.raises(ScrubError, match="start must be"):
        search(42, attn_model, data)


KNOWN_FILE = '''
import scrub
from scrub import EXACT, Feature, Head, Hypothesis
from scrub.zoo import known


def model():
    return known.load("lookup-known")


def dataset():
    return known.dataset("lookup-known", n=64)


def hypotheses():
    h = Hypothesis("last head")
    h.claim(Head(1, 0), EXACT, into=h.output())
    return [h]


def search_features():
    return [Feature.token()]
'''


@pytest.mark.requires_hooked  # its hypothesis file builds a HookedTransformer
def test_cli_search_writes_json_html_python(tmp_path, capsys):
    from scrub.cli import main

    path = tmp_path / "known_hyps.py"
    path.write_text(KNOWN_FILE)
    out = {k: tmp_path / f"s.{k}" for k in ("json", "html", "py")}
    code = main(["search", str(path), "--tau", "0.05", "--taus", "0.5", "--seeds", "1", "--no-progress",
                 "--json", str(out["json"]), "--html", str(out["html"]), "--python", str(out["py"])])
    assert code == 0, capsys.readouterr().err
    data = json.loads(out["json"].read_text())
    assert [p["tau"] for p in data["curve"]] == [0.05, 0.5]
    assert "<svg" in out["html"].read_text()
    space: dict = {}
    exec(out["py"].read_text(), space)
    assert len(space["found"]({"token": Feature.token()}).edges) == len(data["found"]["edges"])
    assert main(["search", str(path), "--start", "nope", "--no-progress"]) == 2
    assert "no hypothesis of that name" in capsys.readouterr().err


def test_taus_must_be_a_list(attn_model, data):
    with pytest.raises(OptionsError, match="taus"):
        search(attn_model, attn_model, data, taus="0.1")


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(st.sets(st.integers(0, 40), max_size=12), st.integers(0, 5))
def test_apply_keeps_a_valid_subgraph(drop, coarsen):
    """Removing any set of edges leaves a valid hypothesis whose edges are a subset, every claim
    reaching the output; the start is unchanged."""
    from scrub.hypothesis.shape import ModelShape

    shape = ModelShape(n_layers=2, n_heads=2, n_ctx=8, attn_only=True)
    h = Hypothesis.full(shape)
    edges = h.edges
    changes = [RemoveEdge.of(edges[i % len(edges)]) for i in drop]
    claim = h.claims[1 + coarsen % (len(h.claims) - 1)]
    g = apply(h, changes + [Coarsen(claim.name, Feature.token())])
    g.validate(shape)
    key = lambda e: (e.child.name, e.parent.name, e.port)  # noqa: E731
    assert {key(e) for e in g.edges} <= {key(e) for e in h.edges} - {(c.child, c.parent, c.port) for c in changes}
    assert len(h.edges) == len(edges)
