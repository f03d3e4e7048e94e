"""Property-based tests: random small hypotheses on one small model (the `hypothesis` library).

(a) every datum of a planned schedule agrees with its parent's datum on the claimed feature;
(b) a "complete" hypothesis (every port of every expanded claim fed by every component upstream
    of it, with features that pin the datum) reproduces the model's logits exactly;
(c) reference rows are independent: running ``schedule.select(perm)`` permutes the outputs;
(d) chunking: running ``schedule.select(rows)`` gives the full output restricted to ``rows``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrub import EXACT, MLP, Embed, Feature, Head, Hypothesis, PosEmbed, plan
from scrub.components import is_upstream, ports_of, stage
from scrub.engine import ReferenceEngine
from scrub.metrics import cross_entropy
from scrub.plan import FeatureCache

from conftest import N_LAYERS, N_HEADS, N_POS, assert_schedule_consistent, random_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

N_ROWS = 32
SETTINGS = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DATA = random_dataset(n=N_ROWS, seed=11, name="properties")
CACHE = FeatureCache(DATA)  # features are pure: evaluate each once for the whole module

# Features (built once, so the shared cache recognises them).
FIRST_TOKEN = Feature("first_token", lambda d: d.tokens[:, 0])
FIRST_PARITY = Feature("first_parity", lambda d: d.tokens[:, 0] % 2)
ANY = Feature.any()
TOKEN = Feature.token()
TOKEN_PARITY = Feature("token_parity", lambda d: d.tokens % 2)
PREV_TOKEN = Feature.prev_token()
PER_EXAMPLE = [EXACT, FIRST_TOKEN, FIRST_PARITY, ANY]
PER_POSITION = [TOKEN, TOKEN_PARITY, PREV_TOKEN]
# Features that pin the datum to the parent's (every class is one row, or one row at a position).
ROW = Feature("row", lambda d: torch.arange(len(d), device=d.device))
ROW_AT_POS = Feature("row@pos", lambda d: torch.arange(len(d), device=d.device)[:, None].expand(-1, d.n_pos))
PINNING = [EXACT, ROW, ROW_AT_POS]

WRITERS = [Embed(), PosEmbed()] + [
    c for layer in range(N_LAYERS) for c in [Head(layer, h) for h in range(N_HEADS)] + [MLP(layer)]
]


def upstream_of(component) -> list:
    s = stage(component, N_LAYERS)
    return [w for w in WRITERS if stage(w, N_LAYERS) < s]


def upstream_in(writers: list, n_layers: int, parallel_blocks: bool = False):
    """``upstream_of`` for another model: its ``writers``; with parallel blocks a head of layer
    ``l`` is not upstream of MLP ``l``."""

    def upstream(component) -> list:
        return [w for w in writers if is_upstream(w, component, n_layers, parallel_blocks)]

    return upstream


@st.composite
def random_hypotheses(draw, upstream=upstream_of, n_pos: int = N_POS) -> Hypothesis:
    """Random heads/MLPs/embeddings on q/k/v/in ports, mixed features, positions, shared claims.

    ``upstream(component)`` lists the components that may feed ``component`` (default: the
    module's small model; `upstream_in` builds one for another model)."""
    h = Hypothesis("random")
    out = h.output()
    claims = []
    used: set = set()  # (parent index, port, component)

    def grow(parent, depth: int, per_position_above: bool) -> None:
        ports = ports_of(parent.component)
        n_children = draw(st.integers(1, 3 if depth == 0 else 2))
        for _ in range(n_children):
            port = draw(st.sampled_from(ports))
            component = draw(st.sampled_from(upstream(parent.component)))
            into = [(parent, port)]
            others = [p for p in ports if p != port]
            if others and draw(st.integers(0, 3)) == 0:  # feeds two ports of a head
                into.append((parent, draw(st.sampled_from(others))))
            keys = {(parent.index, p, component) for _, p in into}
            if keys & used:
                continue
            used.update(keys)
            expand = bool(ports_of(component)) and depth < 3 and draw(st.booleans())
            choices = PER_EXAMPLE if (expand and per_position_above) else PER_EXAMPLE + PER_POSITION
            feature = draw(st.sampled_from(choices))
            positions = draw(st.one_of(st.none(), st.none(), st.none(), st.sets(st.integers(0, n_pos - 1), min_size=1, max_size=3)))
            claim = h.claim(component, feature, into=into, positions=positions)
            claims.append(claim)
            if expand:
                grow(claim, depth + 1, per_position_above or feature in PER_POSITION)

    grow(out, 0, False)
    # occasionally, a claim feeds a second port or parent (treeified per path)
    if claims and draw(st.booleans()):
        child = draw(st.sampled_from(claims))
        parents = [c for c in [out] + claims if child.component in upstream(c.component)]
        parent = draw(st.sampled_from(parents))
        port = draw(st.sampled_from(ports_of(parent.component)))
        if (parent.index, port, child.component) not in used and not _per_position_nesting(h, child, parent):
            used.add((parent.index, port, child.component))
            h.connect(child, into=(parent, port))
    return h


def _per_position_nesting(h: Hypothesis, child, parent) -> bool:
    """Keep schedules small: no per-position node with children below another per-position node."""
    return any(e.child.feature in PER_POSITION for e in h.parents(parent)) and bool(h.children(child))


@st.composite
def complete_hypotheses(draw, upstream=upstream_of) -> Hypothesis:
    """The output and up to two expanded claims read every upstream component through every port
    (``upstream``: as for `random_hypotheses`)."""
    h = Hypothesis("complete")
    out = h.output()
    budget = [2]

    def fill(parent, depth: int) -> None:
        for port in ports_of(parent.component):
            for component in upstream(parent.component):
                expand = bool(ports_of(component)) and depth < 2 and budget[0] > 0 and draw(
                    st.integers(0, 5)) == 0
                claim = h.claim(component, draw(st.sampled_from(PINNING)), into=(parent, port))
                if expand:
                    budget[0] -= 1
                    fill(claim, depth + 1)

    fill(out, 0)
    return h


@st.composite
def seeds(draw) -> int:
    return draw(st.integers(0, 2**31 - 1))


def _engine(model) -> ReferenceEngine:
    return ReferenceEngine(model, DATA)


@SETTINGS
@given(h=random_hypotheses(), seed=seeds(), reference=st.lists(st.integers(0, N_ROWS - 1), min_size=1, max_size=40))
def test_every_datum_agrees_with_its_parent(mlp_model, h, seed, reference):
    h.validate(mlp_model, n_pos=DATA.n_pos)
    s = plan(h, DATA, seed, features=CACHE, reference=torch.tensor(reference))
    n_nodes = assert_schedule_consistent(s)
    # the schedule is the treeified hypothesis, with one copy per position read for per-position
    # nodes that have children
    assert {n.path for n in s.nodes()} == {n.path for n in h.tree().walk()}
    assert n_nodes == _expected_nodes(h.tree()) == sum(1 for _ in s.nodes())


def _expected_nodes(spec) -> int:
    below = sum(_expected_nodes(c) for c in spec.children)
    if spec.children and spec.claim.feature in PER_POSITION:
        copies = N_POS if spec.edge.positions is None else len(spec.edge.positions)
        return 1 + copies * (1 + below)
    return 1 + below


@settings(SETTINGS, max_examples=10)
@given(h=complete_hypotheses(), seed=seeds(), reference=st.permutations(range(N_ROWS)))
def test_complete_hypotheses_reproduce_the_model(mlp_model, h, seed, reference):
    reference = torch.tensor(reference[:20])
    s = plan(h, DATA, seed, features=CACHE, reference=reference)
    assert_schedule_consistent(s)
    with torch.no_grad():
        clean = mlp_model(DATA.tokens[reference])
    assert torch.allclose(_engine(mlp_model).run(s), clean, atol=1e-4)


@SETTINGS
@given(h=random_hypotheses(), seed=seeds(), perm=st.permutations(range(N_ROWS)))
def test_rows_are_independent_under_permutation(mlp_model, h, seed, perm):
    s = plan(h, DATA, seed, features=CACHE)
    perm = torch.tensor(perm)
    engine = _engine(mlp_model)
    full = engine.run(s)
    permuted = engine.run(s.select(perm))
    assert torch.allclose(permuted, full[perm], atol=1e-5)
    # and so are the per-row metric values
    ce = cross_entropy()
    per_row = ce(full, DATA.rows(s.reference))
    assert torch.allclose(ce(permuted, DATA.rows(s.reference[perm])), per_row[perm], atol=1e-5)


@SETTINGS
@given(h=random_hypotheses(), seed=seeds(), rows=st.lists(st.integers(0, N_ROWS - 1), min_size=1, max_size=12))
def test_chunks_equal_the_full_run(any_model, h, seed, rows):
    model = any_model
    if model.cfg.attn_only and any(isinstance(c.component, MLP) for c in h.claims):
        h = _drop_mlps(h)
    s = plan(h, DATA, seed, features=CACHE)
    rows = torch.tensor(rows)
    engine = _engine(model)
    assert torch.allclose(engine.run(s.select(rows)), engine.run(s)[rows], atol=1e-5)


def _drop_mlps(h: Hypothesis) -> Hypothesis:
    return h.without(*[c for c in h.claims if isinstance(c.component, MLP)])
