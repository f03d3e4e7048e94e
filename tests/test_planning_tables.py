"""The planner's per-feature tables (scrub/plan.py), each against the slow, independent computation.

* `size_statistics` (class sizes from the pool's class counts) equals min / median / max of the
  per-entry class-size table (`FeatureValues.class_sizes`), `torch.median` included;
* `_Draws.draw` (per-feature tables, flat gathers) draws the same rows as
  `scrub.data.sample_matching` from the same generator, bit for bit, per row and per position,
  for 1-D and 2-D references; and leaves the generator in the same state;
* the feature cache computes each feature's statistics once, however many schedules ask;
* `FeatureCache.tree` builds a hypothesis's tree once per structure, and a new one when the
  hypothesis changes (a claim added after a first plan is planned).
"""

from __future__ import annotations

import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scrub import EXACT, Dataset, Embed, Feature, Head, Hypothesis, HypothesisError, plan
from scrub.data import FeatureValues, PoolIndex, sample_matching
from scrub.plan import FeatureCache, size_statistics

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None)


@st.composite
def datasets(draw) -> Dataset:
    n = draw(st.integers(1, 40))
    pos = draw(st.integers(1, 6))
    vocab = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**16))
    tokens = torch.randint(0, vocab, (n, pos), generator=torch.Generator().manual_seed(seed))
    return Dataset(tokens=tokens, targets=tokens, loss_mask=torch.ones_like(tokens, dtype=torch.bool))


FEATURES = [
    Feature.token(),
    Feature.prev_token(),
    Feature("first", lambda d: d.tokens[:, 0]),
    Feature("first parity", lambda d: d.tokens[:, 0] % 2),
    Feature.any(),
    Feature.position(),
]


def _slow_statistics(values: FeatureValues) -> tuple[int, float, int]:
    sizes = values.class_sizes().flatten().float()  # [entries]: each entry's class size
    return int(sizes.min()), float(sizes.median()), int(sizes.max())


@SETTINGS
@given(data=datasets(), feature=st.sampled_from(FEATURES))
def test_size_statistics_equal_the_per_entry_table(data, feature):
    values = feature.evaluate(data)
    assert size_statistics(PoolIndex.of(values).count) == _slow_statistics(values)


def test_size_statistics_take_the_lower_median():
    # class counts -> the size of each entry's class, sorted -> its lower median
    assert size_statistics(torch.tensor([1, 0, 1, 3])) == (1, 3.0, 3)  # [1, 1, 3, 3, 3]
    assert size_statistics(torch.tensor([2, 1])) == (1, 2.0, 2)  # [1, 2, 2]
    assert size_statistics(torch.tensor([1, 1, 2])) == (1, 1.0, 2)  # [1, 1, 2, 2]: the lower one


@SETTINGS
@given(
    data=datasets(),
    feature=st.sampled_from(FEATURES),
    seed=st.integers(0, 2**31 - 1),
    per_position_reference=st.booleans(),
    m=st.integers(1, 30),
)
def test_draws_equal_sample_matching_bit_for_bit(data, feature, seed, per_position_reference, m):
    cache = FeatureCache(data)
    values = cache(feature)
    pick = torch.Generator().manual_seed(seed + 1)
    shape = (m, data.n_pos) if per_position_reference else (m,)
    reference = torch.randint(len(data), shape, generator=pick)
    ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    if per_position_reference and not values.per_position:
        with pytest.raises(Exception) as want:
            sample_matching(reference, values, theirs)
        with pytest.raises(type(want.value)):
            cache.draws(feature).draw(reference, ours)
        return
    for _ in range(3):  # consecutive draws: the generator advances alike
        got = cache.draws(feature).draw(reference, ours)
        want = sample_matching(reference, values, theirs, cache.index(feature))
        assert got.dtype == want.dtype and torch.equal(got, want)
    assert torch.equal(ours.get_state(), theirs.get_state())


def _hypothesis(name: str = "h") -> Hypothesis:
    h = Hypothesis(name)
    a = h.claim(Head(1, 0), Feature("first", lambda d: d.tokens[:, 0]), into=h.output())
    h.claim(Embed(), Feature.token(), into=(a, "q"))
    return h


def _dataset(n: int = 16, pos: int = 4) -> Dataset:
    tokens = torch.randint(0, 5, (n, pos), generator=torch.Generator().manual_seed(0))
    return Dataset(tokens=tokens, targets=tokens, loss_mask=torch.ones_like(tokens, dtype=torch.bool))


def test_statistics_are_computed_once_per_feature(monkeypatch):
    data, h = _dataset(), _hypothesis()
    cache = FeatureCache(data)
    calls = []
    plan_module = sys.modules["scrub.plan"]  # (the name scrub.plan is the function)

    original = plan_module.size_statistics
    monkeypatch.setattr(plan_module, "size_statistics", lambda count: calls.append(1) or original(count))
    first = [plan(h, data, seed, features=cache).class_sizes for seed in range(5)]
    assert len(calls) == 2  # "first" and "token"; EXACT and the root have none
    assert all(s == first[0] for s in first)
    for name, values in (("first", cache(h.claims[1].feature)), ("token", cache(h.claims[2].feature))):
        assert first[0][name] == _slow_statistics(values)


def test_tree_is_built_once_per_structure_and_again_after_a_change(monkeypatch):
    data, h = _dataset(), _hypothesis()
    cache = FeatureCache(data)
    builds = []
    original = Hypothesis.tree
    monkeypatch.setattr(Hypothesis, "tree", lambda self: builds.append(self.name) or original(self))
    s0 = plan(h, data, 0, features=cache)
    plan(h, data, 1, features=cache)
    assert builds == ["h"]
    # a hypothesis with the same name and structure is another object: its own tree
    other = _hypothesis()
    plan(other, data, 0, features=cache)
    assert builds == ["h", "h"]
    # changed after planning: the next plan sees the new claim
    h.claim(Embed(), EXACT, into=(h.claims[1], "v"))
    s2 = plan(h, data, 0, features=cache)
    assert len(builds) == 3
    assert sum(1 for _ in s2.nodes()) == sum(1 for _ in s0.nodes()) + 1
    # and the same seed still gives the same draws for the unchanged part
    assert torch.equal(s2.root.children[0].datum, s0.root.children[0].datum)


def test_structure_errors_still_come_first():
    data = _dataset()
    h = Hypothesis("dangling")
    h.output()
    a = h.claim(Head(1, 0), EXACT, into=h.output())
    h._graph.remove_edge(a, h.root, key="in")  # a claim that feeds nothing (only reachable by hand)
    with pytest.raises(HypothesisError, match="feeds nothing"):
        plan(h, data, 0, features=FeatureCache(data))
