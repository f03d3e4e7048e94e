"""Planning: the sampled Schedule follows DESIGN.md section 1 (sampling, treeification, order of draws)."""

from __future__ import annotations

import torch
import pytest

from scrub import EXACT, MLP, Dataset, Embed, Feature, Head, Hypothesis, PosEmbed, ScheduleError, plan
from scrub.data import sample_matching
from scrub.plan import FeatureCache, Schedule

from conftest import N_POS, N_ROWS, assert_schedule_consistent, random_dataset, schedule_tensors

pytestmark = pytest.mark.usefixtures("one_thread")


def first_token() -> Feature:
    """Per example: the first token (about N_ROWS / D_VOCAB rows per class)."""
    return Feature("first_token", lambda d: d.tokens[:, 0])


def first_parity() -> Feature:
    """Per example, coarse: parity of the first token (about half the rows per class)."""
    return Feature("first_parity", lambda d: d.tokens[:, 0] % 2)


def token_parity() -> Feature:
    """Per position, coarse: parity of the token at each position."""
    return Feature("token_parity", lambda d: d.tokens % 2)


def rich_hypothesis() -> Hypothesis:
    """Every kind of node: EXACT, per-example, per-position leaves and per-position nodes with children."""
    h = Hypothesis("rich")
    out = h.output()
    a = h.claim(Head(1, 0), first_parity(), into=out)
    h.claim(Embed(), Feature.token(), into=(a, "q"))
    h.claim(Head(0, 1), Feature.prev_token(), into=(a, "k"))
    h.claim(MLP(0), first_token(), into=(a, "v"), positions=[2, 5])
    b = h.claim(Head(1, 1), token_parity(), into=out)  # per position, with children: copies
    h.claim(Embed(), EXACT, into=(b, "v"))
    h.claim(Head(0, 2), first_parity(), into=(b, "q"))
    c = h.claim(Head(1, 2), Feature.token(), into=out, positions=[1, 4])  # copies only at 1 and 4
    h.claim(PosEmbed(), Feature.any(), into=(c, "k"))
    h.claim(MLP(1), EXACT, into=out)
    return h


def _node(schedule: Schedule, name: str):
    hits = [n for n in schedule.nodes() if n.claim.name == name]
    assert hits, name
    return hits


def test_every_datum_agrees_with_its_parent(data):
    h = rich_hypothesis()
    s = plan(h, data, seed=3)
    n_nodes = assert_schedule_consistent(s)
    # 1 root + Head(1.0) with 3 leaves + Head(1.1) (7 copies x (1 + 2 leaves)) + Head(1.2) (2 copies x 2) + MLP(1)
    assert n_nodes == 1 + 4 + 1 + 7 * 3 + 1 + 2 * 2 + 1
    assert sum(1 for _ in s.nodes()) == n_nodes


def test_resampling_actually_changes_the_datum(data):
    """Agreement alone would pass if nothing were resampled: coarse features must move most rows."""
    s = plan(rich_hypothesis(), data, seed=0)
    head10 = _node(s, "Head(1.0)")[0]
    moved = (head10.datum != s.reference).float().mean()
    assert moved > 0.7, moved  # first-token parity: a class holds about half the rows
    vals = data.tokens[:, 0] % 2
    assert torch.equal(vals[head10.datum], vals[s.reference])
    embed_q = next(c for c in head10.children if c.edge.port == "q")
    # per position: each (row, position) moves somewhere with the same token there
    assert (embed_q.datum != head10.datum[:, None]).float().mean() > 0.7
    cols = torch.arange(N_POS)
    assert torch.equal(data.tokens[embed_q.datum, cols], data.tokens[head10.datum])
    # a per-position datum is drawn separately at each position: the rows differ across positions
    assert (embed_q.datum[:, 1:] != embed_q.datum[:, :1]).float().mean() > 0.7


def test_exact_children_and_the_root(data):
    h = Hypothesis("exact")
    out = h.output()
    a = h.claim(Head(1, 0), EXACT, into=out)
    e = h.claim(Embed(), EXACT, into=(a, "q"))
    reference = torch.tensor([5, 3, 3, 40, 0])
    s = plan(h, data, seed=1, reference=reference)
    assert torch.equal(s.reference, reference) and s.n_rows == 5
    assert torch.equal(s.root.datum, reference) and s.root.is_root and s.root.edge is None
    (na,) = s.root.children
    (ne,) = na.children
    assert torch.equal(na.datum, reference) and torch.equal(ne.datum, reference)
    assert ne.is_leaf and ne.other is None
    assert na.other is not None and s.root.other is not None
    assert na.claim is a and ne.claim is e
    # default reference: every row, in order
    assert torch.equal(plan(h, data, seed=1).reference, torch.arange(len(data)))


def test_treeified_copies_draw_independently_per_port(data):
    h = Hypothesis("two ports")
    out = h.output()
    a = h.claim(Head(1, 0), EXACT, into=out)
    shared = h.claim(Head(0, 0), first_parity(), into=[(a, "q"), (a, "k")])
    h.claim(Embed(), first_parity(), into=(shared, "v"))
    s = plan(h, data, seed=0)
    assert_schedule_consistent(s)
    q, k = _node(s, "Head(0.0)")
    assert {q.edge.port, k.edge.port} == {"q", "k"} and q.path != k.path
    assert (q.datum != k.datum).float().mean() > 0.7
    assert (q.other != k.other).float().mean() > 0.7, "each copy has its own other datum"
    (qe,), (ke,) = q.children, k.children
    assert (qe.datum != ke.datum).float().mean() > 0.7, "and its own child draws"


def test_treeified_copies_draw_independently_per_parent(data):
    h = Hypothesis("two parents")
    out = h.output()
    a = h.claim(Head(1, 0), EXACT, into=out)
    b = h.claim(Head(1, 1), EXACT, into=out)
    shared = h.claim(Embed(), first_parity(), into=(a, "v"))
    h.connect(shared, into=(b, "v"))
    s = plan(h, data, seed=4)
    assert_schedule_consistent(s)
    one, two = _node(s, "Embed")
    assert one.edge.parent is a and two.edge.parent is b
    assert (one.datum != two.datum).float().mean() > 0.7


def test_per_position_nodes_with_children_are_copied_per_position(data):
    s = plan(rich_hypothesis(), data, seed=2)
    b, *copies = _node(s, "Head(1.1)")
    assert [id(c) for c in copies] == [id(c) for c in b.copies.values()], "walk() yields the copies after the node"
    assert b.per_position and b.datum.shape == (N_ROWS, N_POS)
    assert b.other is None and b.children == () and not b.is_leaf
    assert sorted(b.copies) == list(range(N_POS))
    others = []
    for t, copy in b.copies.items():
        assert torch.equal(copy.datum, b.datum[:, t])
        assert not copy.per_position and copy.copies is None
        assert [c.edge.port for c in copy.children] == ["v", "q"]
        exact_v, q = copy.children
        assert torch.equal(exact_v.datum, copy.datum)
        par = data.tokens[:, 0] % 2
        assert torch.equal(par[q.datum], par[copy.datum])
        others.append(copy.other)
    # each copy has its own "other" datum
    assert all((others[i] != others[j]).float().mean() > 0.7 for i in range(N_POS) for j in range(i))
    # restricted edge: only the positions it reads
    c = _node(s, "Head(1.2)")[0]
    assert sorted(c.copies) == [1, 4]
    for t, copy in c.copies.items():
        assert torch.equal(copy.datum, c.datum[:, t])
        assert torch.equal(data.tokens[copy.datum, t], data.tokens[s.reference, t])
    # a per-position leaf keeps its [n, pos] datum and has no copies
    (leaf,) = [n for n in _node(s, "Embed") if n.edge.parent.name == "Head(1.0)"]
    assert leaf.is_leaf and leaf.per_position and leaf.copies is None


def test_same_seed_same_schedule_bit_for_bit(data):
    h = rich_hypothesis()
    one, two = plan(h, data, seed=11), plan(h, data, seed=11)
    t1, t2 = schedule_tensors(one), schedule_tensors(two)
    assert len(t1) == len(t2)
    assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(t1, t2))
    # a fresh hypothesis object built the same way, and a shared feature cache, change nothing
    cache = FeatureCache(data)
    three = plan(rich_hypothesis(), data, seed=11, features=cache)
    assert all(torch.equal(a, b) for a, b in zip(t1, schedule_tensors(three)))
    other = plan(h, data, seed=12)
    diffs = [not torch.equal(a, b) for a, b in zip(t1[1:], schedule_tensors(other)[1:]) if a.numel()]
    assert sum(diffs) >= len(diffs) - 3  # almost every sampled tensor changes (EXACT copies of the reference do not)


def test_plan_uses_no_global_random_state(data):
    h = rich_hypothesis()
    torch.manual_seed(0)
    one = plan(h, data, seed=5)
    torch.manual_seed(123)
    torch.rand(10)
    two = plan(h, data, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(schedule_tensors(one), schedule_tensors(two)))


def test_hypothesis_and_baseline_share_the_root_other_datum(data):
    h = rich_hypothesis()
    base = Hypothesis("baseline")
    base.output()
    for seed in (0, 7):
        s_h, s_b = plan(h, data, seed=seed), plan(base, data, seed=seed)
        assert torch.equal(s_h.root.other, s_b.root.other)
        assert s_b.root.children == ()
    assert not torch.equal(plan(base, data, seed=0).root.other, plan(base, data, seed=7).root.other)


def test_order_of_draws(data):
    """DESIGN.md: at each node the other datum first, then children in claim order, depth first."""
    h = Hypothesis("order")
    out = h.output()
    a = h.claim(Head(1, 0), first_token(), into=out)
    tok, anything = Feature.token(), Feature.any()
    h.claim(Embed(), tok, into=(a, "q"))
    h.claim(Head(0, 1), anything, into=(a, "k"))
    b = h.claim(Head(1, 1), EXACT, into=out)
    pos = Feature.position()
    h.claim(PosEmbed(), pos, into=(b, "v"))
    reference = torch.arange(10, 30)
    s = plan(h, data, seed=9, reference=reference)

    cache = FeatureCache(data)
    g = torch.Generator().manual_seed(9)
    n = len(reference)
    root_other = torch.randint(len(data), (n,), generator=g)
    a_datum = sample_matching(reference, cache(a.feature), g)
    a_other = torch.randint(len(data), (n,), generator=g)
    q_datum = sample_matching(a_datum, cache(tok), g)
    k_datum = sample_matching(a_datum, cache(anything), g)
    b_other = torch.randint(len(data), (n,), generator=g)  # EXACT: no draw for b's datum
    v_datum = sample_matching(reference, cache(pos), g)

    na, nb = s.root.children
    nq, nk = na.children
    (nv,) = nb.children
    assert torch.equal(s.root.other, root_other)
    assert torch.equal(na.datum, a_datum) and torch.equal(na.other, a_other)
    assert torch.equal(nq.datum, q_datum) and torch.equal(nk.datum, k_datum)
    assert torch.equal(nb.datum, reference) and torch.equal(nb.other, b_other)
    assert torch.equal(nv.datum, v_datum)


def _chi_square(counts: torch.Tensor) -> float:
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def test_sampling_is_uniform_within_a_class():
    n = 40
    cls = torch.arange(n) % 10  # ten classes of four rows: {0, 10, 20, 30}, ...
    tokens = torch.zeros((n, 3), dtype=torch.long)
    data = Dataset(tokens=tokens, targets=tokens, loss_mask=torch.ones((n, 3), dtype=torch.bool), name="classes",
                   extras={"cls": cls})
    h = Hypothesis("uniform")
    h.claim(Embed(), Feature.extra("cls"), into=h.output())
    draws = 4000
    s = plan(h, data, seed=0, reference=torch.zeros(draws, dtype=torch.long))
    (leaf,) = s.root.children
    assert set(leaf.datum.tolist()) == {0, 10, 20, 30}, "draws stay inside the class, and reach all of it"
    counts = torch.bincount(leaf.datum, minlength=n)[[0, 10, 20, 30]].double()
    assert _chi_square(counts) < 25.0, counts  # 3 degrees of freedom: p < 1e-4 to fail by chance
    # the other datum is uniform over the whole dataset
    other = torch.bincount(s.root.other, minlength=n).double()
    assert _chi_square(other) < 110.0, other  # 39 degrees of freedom


def test_per_position_sampling_is_uniform_within_each_position_class():
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 3, (60, 4), generator=g)
    data = Dataset(tokens=tokens, targets=tokens, loss_mask=torch.ones((60, 4), dtype=torch.bool), name="tok")
    h = Hypothesis("uniform")
    h.claim(Embed(), Feature.token(), into=h.output())
    draws = 3000
    s = plan(h, data, seed=1, reference=torch.full((draws,), 7, dtype=torch.long))
    (leaf,) = s.root.children
    for t in range(4):
        members = (tokens[:, t] == tokens[7, t]).nonzero().flatten()
        drawn = leaf.datum[:, t]
        assert set(drawn.tolist()) == set(members.tolist())
        counts = torch.bincount(drawn, minlength=60)[members].double()
        df = len(members) - 1
        assert _chi_square(counts) < df + 8 * (2 * df) ** 0.5, (t, counts)


def test_select_restricts_every_node(data):
    s = plan(rich_hypothesis(), data, seed=5)
    rows = torch.tensor([7, 0, 7, 30])
    sub = s.select(rows)
    assert torch.equal(sub.reference, s.reference[rows]) and sub.n_rows == 4 and sub.dataset is data
    for full, part in zip(s.nodes(), sub.nodes()):
        assert full.claim is part.claim and full.path == part.path
        assert torch.equal(part.datum, full.datum[rows])
        assert (full.other is None) == (part.other is None)
        if full.other is not None:
            assert torch.equal(part.other, full.other[rows])
    assert_schedule_consistent(sub)


def test_schedule_printing_shows_features_and_class_sizes():
    n = 12
    tokens = torch.tensor([[i % 3, i % 4, 0] for i in range(n)])
    data = Dataset(tokens=tokens, targets=tokens, loss_mask=torch.ones((n, 3), dtype=torch.bool), name="tiny",
                   extras={"row": torch.arange(n)})
    h = Hypothesis("printed")
    out = h.output()
    a = h.claim(Head(1, 0), first_token(), into=out)
    h.claim(Embed(), Feature.token(), into=(a, "q"), positions=[1])
    h.claim(Head(0, 0), Feature.extra("row"), into=(a, "k"))
    h.claim(PosEmbed(), EXACT, into=out)
    s = plan(h, data, seed=0)
    text = str(s)
    assert text.startswith("Schedule 'printed': seed 0, 12 reference rows of dataset 'tiny' (12 rows)")
    assert "<-in- Head(1.0) [first_token, per-row datum]" in text
    assert "<-q @pos[1]- Embed [token, per-position datum] leaf" in text
    assert "<-k- Head(0.0) [extra[row], per-row datum] leaf" in text
    assert "<-in- PosEmbed [EXACT, per-row datum] leaf" in text
    # class sizes: first token i % 3 -> 4 rows each; token per position: 4, 3, 12 rows; row id: 1
    assert "first_token: 4 / 4 / 4" in text
    assert "token: 3 / 4 / 12" in text
    assert "extra[row]: 1 / 1 / 1  <- small" in text
    assert "EXACT:" not in text
    assert s.class_sizes["first_token"] == (4, 4.0, 4)
    assert repr(s) == "Schedule('printed', seed=0, rows=12, nodes=5)"
    # per-position nodes with children say so
    s2 = plan(rich_hypothesis(), random_dataset(), seed=0)
    assert f"treeified into {N_POS} per-position copies" in str(s2)
    assert "treeified into 2 per-position copies" in str(s2)


def test_a_feature_cache_for_another_dataset_is_refused(data):
    h = Hypothesis("h")
    h.claim(Embed(), Feature.token(), into=h.output())
    with pytest.raises(ScheduleError, match="feature cache was built for another dataset"):
        plan(h, data, seed=0, features=FeatureCache(random_dataset(n=5)))


def test_plan_with_a_model_validates_first(attn_model, data):
    h = Hypothesis("h")
    h.claim(MLP(0), EXACT, into=h.output())
    plan(h, data, seed=0)  # pure planning does not know the model
    from scrub import ComponentError

    with pytest.raises(ComponentError, match="attention-only"):
        plan(h, data, seed=0, model=attn_model)
