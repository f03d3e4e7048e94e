"""The result store: cells read back bit for bit, no forward pass for finished cells, atomic
writes, and the refusals (incompatible version, unwritable directory, conflicting cells)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scrub
from scrub import Feature, Head, Hypothesis
from scrub.options import RunOptions
from scrub.store import Cell, Store, StoreError, hypothesis_fingerprint
from scrub.store.keys import _function_digest

from conftest import copy_model, random_dataset, two_small_hypotheses

pytestmark = pytest.mark.usefixtures("one_thread")


_hyps = two_small_hypotheses


@pytest.fixture()
def no_forward(monkeypatch):
    """Within a test: building an engine (the only way to a forward pass) raises. Call the fixture's
    value to switch it on."""

    def boom(*args, **kwargs):
        raise RuntimeError("forward pass attempted")

    def switch_on():
        monkeypatch.setattr(scrub.api, "make_engine", boom)

    return switch_on


def _same(r1, r2) -> None:
    assert json.dumps(r1.to_dict(), sort_keys=True) == json.dumps(r2.to_dict(), sort_keys=True)  # NaN == NaN
    for name in ("reference", "model", "base", "scrub"):
        a, b = getattr(r1.rows, name), getattr(r2.rows, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name


def _cells(path) -> list:
    return sorted(p.name for p in (path / "cells").glob("*/*.pt"))


def test_second_call_reads_the_store_bit_for_bit_without_forward(attn_model, data, tmp_path, no_forward):
    hyps = _hyps()
    plain = scrub.evaluate_many(hyps, attn_model, data, seeds=2)
    first = scrub.evaluate_many(hyps, attn_model, data, seeds=2, store=tmp_path)
    assert len(_cells(tmp_path)) == 4  # 2 hypotheses x 2 seeds
    no_forward()
    again = scrub.evaluate_many(hyps, attn_model, data, seeds=2, store=tmp_path)
    for p, f, a in zip(plain, first, again):
        _same(p, f)
        _same(f, a)
    one = scrub.evaluate(hyps[1], attn_model, data, seeds=2, store=str(tmp_path))
    _same(one, first[1])
    with pytest.raises(RuntimeError, match="forward pass attempted"):  # the broken model really is broken
        scrub.evaluate(hyps[1], attn_model, data, seeds=[5], store=tmp_path)


def test_compare_and_report_read_the_store(attn_model, data, tmp_path, no_forward):
    hyps = _hyps()
    opts = RunOptions(seeds=2, store=tmp_path)
    first = scrub.compare(hyps, attn_model, data, options=opts)
    rep = scrub.report(hyps[1], attn_model, data, options=opts, compensation=False, pairs=None)
    no_forward()
    again = scrub.compare(hyps, attn_model, data, options=opts)
    assert [d.to_dict() for d in first.differences] == [d.to_dict() for d in again.differences]
    rep2 = scrub.report(hyps[1], attn_model, data, options=opts, compensation=False, pairs=None)
    assert rep.full.to_dict() == rep2.full.to_dict() == first.results[1].to_dict()


def test_only_missing_cells_are_computed(attn_model, data, tmp_path):
    hyps = _hyps()
    scrub.evaluate_many(hyps, attn_model, data, seeds=[0], store=tmp_path)
    before = set(_cells(tmp_path))
    both = scrub.evaluate_many(hyps, attn_model, data, seeds=[0, 1], store=tmp_path)
    assert len(set(_cells(tmp_path)) - before) == 2
    for r, plain in zip(both, scrub.evaluate_many(hyps, attn_model, data, seeds=[0, 1])):
        _same(r, plain)


def test_cell_keys_follow_what_changes_numbers(attn_model, mlp_model, data, tmp_path, no_forward):
    h = _hyps()[1]
    scrub.evaluate(h, attn_model, data, store=tmp_path)
    n = len(_cells(tmp_path))
    scrub.evaluate(h, attn_model, data, store=tmp_path, n=20)  # other reference rows
    scrub.evaluate(h, attn_model, data, store=tmp_path, metric="kl")  # another metric
    scrub.evaluate(h, attn_model, random_dataset(seed=7), store=tmp_path)  # another dataset
    scrub.evaluate(h, copy_model(mlp_model), data, store=tmp_path)  # another model
    scrub.evaluate(h, attn_model, data, store=tmp_path, engine="reference")  # another engine
    assert len(_cells(tmp_path)) == n + 5
    no_forward()
    renamed = _hyps()[1]
    renamed.name = "another label"
    scrub.evaluate(renamed, attn_model, data, store=tmp_path)  # labels do not count


def test_unwritable_store_is_refused_before_any_forward_pass(attn_model, data, tmp_path, no_forward):
    no_forward()
    blocker = tmp_path / "a file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="not a writable directory"):
        scrub.evaluate(_hyps()[0], attn_model, data, store=blocker / "runs")
    with pytest.raises(StoreError, match="is a file"):
        scrub.evaluate(_hyps()[0], attn_model, data, store=blocker)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(StoreError, match="not a writable directory"):
            RunOptions(store=locked)


def test_store_option_of_the_wrong_type_is_an_options_error():
    from scrub.errors import OptionsError

    with pytest.raises(OptionsError, match="store must be a directory path"):
        RunOptions(store=3)


def test_incompatible_store_version_is_refused_naming_both(tmp_path):
    Store.open(tmp_path)
    (tmp_path / "store.json").write_text(json.dumps({"format": 1, "scrub": "0.0.7"}))
    with pytest.raises(StoreError) as err:
        Store.open(tmp_path)
    assert "0.0.7" in str(err.value) and scrub.__version__ in str(err.value)
    (tmp_path / "store.json").write_text("{broken")
    with pytest.raises(StoreError, match="not a scrub store"):
        Store.open(tmp_path)


def _cell(key: str, value: float) -> Cell:
    v = torch.full((3,), value, dtype=torch.float64)
    return Cell(key, {"hypothesis": "h", "seed": 0}, torch.arange(3), v, v, v, None)


def test_conflicting_cell_is_refused_never_overwritten(tmp_path):
    store = Store.open(tmp_path)
    key = "ab" + "0" * 38
    assert store.write(_cell(key, 1.0)) is True
    assert store.write(_cell(key, 1.0)) is False  # the same contents again: fine, nothing written
    stamp = store.cell_path(key).read_bytes()
    with pytest.raises(StoreError, match="different values"):
        store.write(_cell(key, 2.0))
    assert store.cell_path(key).read_bytes() == stamp
    nan = _cell(key.replace("ab", "cd", 1), float("nan"))
    store.write(nan)
    assert store.read(nan.key).same_values(nan)  # NaN compares bit for bit


def test_half_written_cell_is_never_read(attn_model, data, tmp_path, no_forward):
    h = _hyps()[0]
    done = scrub.evaluate(h, attn_model, data, store=tmp_path)
    (path,) = (tmp_path / "cells").glob("*/*.pt")
    # a crash mid-write leaves only the temporary file: it is not a cell, the cell is computed again
    partial = path.parent / f".{path.name}.x1y2.tmp"
    partial.write_bytes(path.read_bytes()[:100])
    path.unlink()
    again = scrub.evaluate(h, attn_model, data, store=tmp_path)
    _same(done, again)
    assert path.is_file()
    # a damaged file under a cell's name is refused, not read
    path.write_bytes(path.read_bytes()[:100])
    no_forward()
    with pytest.raises(StoreError, match="damaged"):
        scrub.evaluate(h, attn_model, data, store=tmp_path)


def test_feature_definitions_count_by_code_and_captured_values():
    def extra(key):
        return lambda d: d.extras[key]

    assert _function_digest(extra("a")) == _function_digest(extra("a"))
    assert _function_digest(extra("a")) != _function_digest(extra("b"))
    assert _function_digest(lambda d: d.tokens[:, 0]) != _function_digest(lambda d: d.tokens[:, 1])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2)), min_size=1, max_size=4, unique=True),
       st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2)), min_size=1, max_size=4, unique=True))
def test_hypothesis_fingerprint_is_the_claim_graph(heads_a, heads_b):
    def build(heads, name):
        h = Hypothesis(name)
        out = h.output()
        for layer, head in heads:
            h.claim(Head(layer, head), Feature.token(), into=out, name=f"{name}{layer}{head}")
        return h

    same = hypothesis_fingerprint(build(heads_a, "x")) == hypothesis_fingerprint(build(heads_b, "y"))
    assert same == (heads_a == heads_b)


def test_report_and_compare_take_store_as_a_keyword(attn_model, data, tmp_path, no_forward):
    hyps = _hyps()
    first = scrub.compare(hyps, attn_model, data, seeds=2, store=tmp_path)
    rep = scrub.report(hyps[1], attn_model, data, seeds=2, store=tmp_path, compensation=False, pairs=None)
    no_forward()
    again = scrub.compare(hyps, attn_model, data, seeds=2, store=tmp_path)
    assert [d.to_dict() for d in first.differences] == [d.to_dict() for d in again.differences]
    rep2 = scrub.report(hyps[1], attn_model, data, seeds=2, store=tmp_path, compensation=False, pairs=None)
    assert rep.full.to_dict() == rep2.full.to_dict()
