"""`RunOptions` / `ReportOptions`: every field checked when built, and every public entry point
refusing bad options and wrong arguments before any forward pass (a model whose forward raises and
an engine factory that raises prove nothing ran)."""

from __future__ import annotations

import math

import attrs
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scrub
from conftest import copy_model, full_exact
from scrub import EXACT, Embed, Hypothesis
from scrub.errors import OptionsError, ScrubError
from scrub.options import MIN_MEMORY_BUDGET_MB, MIN_N_BOOT, ReportOptions, RunOptions

pytestmark = pytest.mark.usefixtures("one_thread")


def _single() -> Hypothesis:
    h = Hypothesis("embed exact")
    h.claim(Embed(), EXACT, into=h.output())
    return h


# ---- every field: bad values named in the message ----------------------------------------------

BAD = [
    ("n", -5, "integer >= 1"),
    ("n", 0, "integer >= 1"),
    ("n", 2.5, "integer >= 1"),
    ("n", True, "integer >= 1"),
    ("n", "10", "integer >= 1"),
    ("seeds", 0, "positive count"),
    ("seeds", -1, "positive count"),
    ("seeds", [], "non-empty list"),
    ("seeds", [0, 0], "repeated seed"),
    ("seeds", [0, -3], "[0, 2**63)"),
    ("seeds", [1.5], "integers"),
    ("seeds", True, "positive count"),
    ("seeds", "2", "positive count"),
    ("seeds", torch.tensor(2.0), "positive count"),
    ("batch_size", -1, "integer >= 1"),
    ("batch_size", 0, "integer >= 1"),
    ("batch_size", False, "integer >= 1"),
    ("memory_budget_mb", 0, f">= {MIN_MEMORY_BUDGET_MB:g}"),
    ("memory_budget_mb", 1, "bookkeeping"),
    ("memory_budget_mb", float("nan"), "megabytes"),
    ("memory_budget_mb", "4096", "megabytes"),
    ("ci_level", 1.5, "strictly between 0 and 1"),
    ("ci_level", 0, "strictly between 0 and 1"),
    ("ci_level", 1, "strictly between 0 and 1"),
    ("ci_level", float("nan"), "strictly between 0 and 1"),
    ("ci_level", True, "strictly between 0 and 1"),
    ("n_boot", 0, f"integer >= {MIN_N_BOOT}"),
    ("n_boot", 5, f"integer >= {MIN_N_BOOT}"),
    ("n_boot", 100.0, f"integer >= {MIN_N_BOOT}"),
    ("engine", "warp", "choose one of"),
    ("engine", 3, "choose one of"),
    ("baseline", "output alone", "scrub.Hypothesis"),
    ("device", "no-such-device", "torch device"),
    ("device", 0.5, "torch device"),
    ("progress", 1, "True or False"),
    ("progress", "yes", "True or False"),
]


@pytest.mark.parametrize("field, value, needle", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_every_field_refuses_bad_values_by_name(field, value, needle):
    with pytest.raises(OptionsError) as info:
        RunOptions(**{field: value})
    message = str(info.value)
    assert needle in message
    if field != "engine":
        assert message.startswith(f"{field}=")  # the argument and the value it got
    assert isinstance(info.value, ScrubError)


def test_defaults_and_normal_values():
    o = RunOptions()
    assert o.seeds == (0,) and o.metric.name == "cross_entropy" and o.n is None and o.n_boot == 1000
    o = RunOptions(seeds=3, metric="accuracy", n=10, engine="batched", batch_size=4, memory_budget_mb=64,
                   ci_level=0.9, n_boot=200, device="cpu", progress=True)
    assert o.seeds == (0, 1, 2) and o.metric.name == "accuracy" and o.memory_budget_mb == 64.0
    assert o.device == torch.device("cpu")
    assert RunOptions(seeds=[5, 3]).seeds == (5, 3)
    assert RunOptions(seeds=torch.tensor([1, 2])).seeds == (1, 2)
    assert RunOptions(seeds=torch.tensor(2)).seeds == (0, 1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        o.n = 3


def test_reference_engine_refuses_batched_engine_settings():
    with pytest.raises(OptionsError, match="memory_budget_mb apply to the batched engine"):
        RunOptions(engine="reference", memory_budget_mb=512)
    with pytest.raises(OptionsError, match="device apply to the batched engine"):
        RunOptions(engine="reference", device="cpu")


def test_unavailable_device_is_refused():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(OptionsError, match="CUDA is not available"):
        RunOptions(device="cuda")


@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_counts_accept_exactly_the_positive_integers(k):
    for field in ("n", "batch_size"):
        if k >= 1:
            assert getattr(RunOptions(**{field: k}), field) == k
        else:
            with pytest.raises(OptionsError, match=field):
                RunOptions(**{field: k})


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_ci_level_accepts_exactly_the_open_unit_interval(x):
    if 0 < x < 1:
        assert RunOptions(ci_level=x).ci_level == x
    else:
        with pytest.raises(OptionsError, match="ci_level"):
            RunOptions(ci_level=x)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_memory_budget_has_a_floor(x):
    if math.isfinite(x) and x >= MIN_MEMORY_BUDGET_MB:
        assert RunOptions(memory_budget_mb=x).memory_budget_mb == x
    else:
        with pytest.raises(OptionsError, match="memory_budget_mb"):
            RunOptions(memory_budget_mb=x)


@given(st.lists(st.integers(min_value=-5, max_value=2**64), max_size=6))
def test_seed_lists(seeds):
    ok = bool(seeds) and len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)
    if ok:
        assert RunOptions(seeds=seeds).seeds == tuple(seeds)
    else:
        with pytest.raises(OptionsError, match="seeds"):
            RunOptions(seeds=seeds)


REPORT_BAD = [
    ("leave_one_out", "yes", "True or False"),
    ("paths_limit", 0, "integer >= 1"),
    ("max_pairs", -1, "integer >= 0"),
    ("min_effect", -0.1, ">= 0"),
    ("pairs", "upstream", "'downstream'"),
    ("pairs", [("A",)], "not a pair"),
    ("subgraphs", ["A"], "dict"),
    ("datasets", {"x": 3}, "not a scrub.Dataset"),
    ("compensation_metric", "bleu", "unknown metric"),
    ("run", {"seeds": 2}, "RunOptions"),
]


@pytest.mark.parametrize("field, value, needle", REPORT_BAD, ids=[f for f, _, _ in REPORT_BAD])
def test_report_options_refuse_bad_values(field, value, needle):
    with pytest.raises(ScrubError, match=needle):
        ReportOptions(**{field: value})


# ---- the doors: refused before any forward pass ------------------------------------------------


@pytest.fixture()
def untouchable(attn_model, monkeypatch):
    """A model whose forward raises, and an engine factory that raises: nothing may run."""
    model = copy_model(attn_model)

    def forward(*args, **kwargs):
        raise AssertionError("a forward pass ran")

    model.forward = forward

    def no_engine(*args, **kwargs):
        raise AssertionError("an engine was built")

    monkeypatch.setattr(scrub.api, "make_engine", no_engine)
    return model


DOOR_BAD = [
    dict(n=-5), dict(ci_level=1.5), dict(ci_level=0), dict(n_boot=0), dict(batch_size=-1), dict(batch_size=0),
    dict(memory_budget_mb=0), dict(seeds=True), dict(n=True), dict(progress=1), dict(baseline="x"),
]


@pytest.mark.parametrize("bad", DOOR_BAD, ids=[str(b) for b in DOOR_BAD])
def test_entry_points_refuse_bad_options_before_any_forward_pass(bad, untouchable, data):
    h, h2 = _single(), full_exact(untouchable)
    calls = [
        lambda: scrub.evaluate(h, untouchable, data, **bad),
        lambda: scrub.evaluate_many([h, h2], untouchable, data, **bad),
        lambda: scrub.report(h2, untouchable, data, **bad),
        lambda: scrub.compare([h, h2], untouchable, data, **bad),
        lambda: scrub.generality(h, untouchable, {"d": data}, **bad),
    ]
    for call in calls:
        with pytest.raises(OptionsError, match=next(iter(bad))):
            call()


def test_entry_points_say_what_was_passed(untouchable, data):
    h = _single()
    with pytest.raises(OptionsError, match="model must be a TransformerLens HookedTransformer.*got builtins.str"):
        scrub.evaluate(h, "gpt2", data)
    with pytest.raises(OptionsError, match="data must be a scrub.Dataset.*got dict"):
        scrub.evaluate(h, untouchable, {"tokens": data.tokens})
    with pytest.raises(OptionsError, match="h must be a scrub.Hypothesis, got str"):
        scrub.evaluate("induction", untouchable, data)
    with pytest.raises(OptionsError, match=r"wrap the single one as \[h\]"):
        scrub.evaluate_many(h, untouchable, data)
    with pytest.raises(OptionsError, match=r"hypotheses\[1\] must be a scrub.Hypothesis, got int"):
        scrub.evaluate_many([h, 3], untouchable, data)
    with pytest.raises(OptionsError, match="model must be"):
        scrub.report(h, object(), data)
    with pytest.raises(OptionsError, match="data must be a scrub.Dataset"):
        scrub.report(h, untouchable, data.tokens)
    with pytest.raises(OptionsError, match=r"hypotheses\[0\] must be a scrub.Hypothesis"):
        scrub.compare(["a", h], untouchable, data)
    with pytest.raises(OptionsError, match="model must be"):
        scrub.generality(h, None, {"d": data})
    with pytest.raises(ScrubError, match="unknown options"):
        scrub.generality(h, untouchable, {"d": data}, sedes=2)


def test_float_targets_are_refused_before_any_forward_pass(untouchable, data):
    floats = attrs.evolve(data, targets=data.targets.float() / 20)  # all in [0, 1): int() used to pass them
    with pytest.raises(scrub.DatasetError, match="class-index targets.*float32.*squared_error"):
        scrub.evaluate(_single(), untouchable, floats)
    with pytest.raises(scrub.DatasetError, match="class-index"):
        scrub.report(full_exact(untouchable), untouchable, floats, n_boot=10)


def test_options_value_is_accepted_and_equals_the_keywords(attn_model, data):
    h = full_exact(attn_model)
    options = RunOptions(seeds=2, n=16, n_boot=20, engine="reference")
    a = scrub.evaluate(h, attn_model, data, options=options)
    b = scrub.evaluate(h, attn_model, data, seeds=2, n=16, n_boot=20, engine="reference")
    assert (a.loss_recovered, a.stderr, a.ci, a.seeds, a.n_rows) == (b.loss_recovered, b.stderr, b.ci, b.seeds, b.n_rows)
    assert a.n_rows == 16 and a.seeds == (0, 1)


def test_options_and_keywords_together_are_refused(attn_model, data):
    with pytest.raises(OptionsError, match=r"either options=... or the keywords \['n'\]"):
        scrub.evaluate(_single(), attn_model, data, n=4, options=RunOptions())
    with pytest.raises(OptionsError, match="options must be a scrub.options.RunOptions"):
        scrub.evaluate(_single(), attn_model, data, options={"n": 4})
    with pytest.raises(OptionsError, match=r"\['min_effect'\]"):
        scrub.report(_single(), attn_model, data, min_effect=0.1, options=ReportOptions())


def test_report_and_compare_take_one_options_value(attn_model, data):
    h = full_exact(attn_model)
    run = RunOptions(seeds=1, n=12, n_boot=20, engine="reference")
    kw = dict(alone=False, paths=False, pairs=None, compensation=False)
    a = scrub.report(h, attn_model, data, options=ReportOptions(run=run, **kw))
    b = scrub.report(h, attn_model, data, options=run, **kw)
    c = scrub.report(h, attn_model, data, seeds=1, n=12, n_boot=20, engine="reference", **kw)
    values = [[s.result.loss_recovered for s in r.subgraphs] for r in (a, b, c)]
    assert values[0] == values[1] == values[2] and len(values[0]) == len(h.claims) - 1
    assert a.full.n_rows == 12 and a.full.seeds == (0,)
    cmp = scrub.compare([h, _single()], attn_model, data, options=run)
    assert [r.n_rows for r in cmp.results] == [12, 12]
