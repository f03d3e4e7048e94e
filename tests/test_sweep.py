"""Sweeps into the store (in-process), sharded evaluation == unsharded on the zoo model, rebuilding
results and comparisons from the store alone, and the ``scrub sweep`` / ``scrub show`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scrub
import scrub.store.sweep as sweep_module
import scrub.zoo
from scrub.cli import main
from scrub.errors import OptionsError, ScrubError
from scrub.options import RunOptions
from scrub.store import show as store_show
from scrub.store.sweep import evaluate_sharded, sweep

from conftest import random_dataset, two_small_hypotheses

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def zoo():
    model = scrub.zoo.load("induction-2l")
    return model, scrub.tasks.induction(n=40, seed=0)


_hyps = two_small_hypotheses


def _dump(results) -> list:
    return [json.dumps(r.to_dict(), sort_keys=True) for r in results]


@settings(max_examples=4, deadline=None)
@given(shards=st.integers(1, 45), n=st.sampled_from([None, 17]), batch_size=st.sampled_from([None, 8]))
def test_sharded_equals_unsharded_on_the_zoo_model(zoo, shards, n, batch_size):
    model, data = zoo
    hyps = _hyps((0, 3))
    plain = scrub.evaluate_many(hyps, model, data, seeds=2, n=n, batch_size=batch_size)
    sharded = evaluate_sharded(hyps, model, data, shards=shards, seeds=2, n=n, batch_size=batch_size)
    assert _dump(sharded) == _dump(plain)
    for p, s in zip(plain, sharded):
        for name in ("reference", "model", "base", "scrub"):
            assert torch.equal(getattr(p.rows, name), getattr(s.rows, name))


def test_sharded_with_a_store_writes_the_same_cells(attn_model, data, tmp_path):
    hyps = _hyps()
    sharded = evaluate_sharded(hyps, attn_model, data, shards=3, seeds=2, store=tmp_path)
    assert _dump(scrub.evaluate_many(hyps, attn_model, data, seeds=2, store=tmp_path)) == _dump(sharded)
    with pytest.raises(OptionsError, match="shards"):
        evaluate_sharded(hyps, attn_model, data, shards=0)


def test_sweep_grid_resumes_and_matches_evaluate(attn_model, mlp_model, data, tmp_path, monkeypatch):
    hyps, other = _hyps(), random_dataset(seed=5, name="other")
    grid = dict(models={"attn": attn_model, "mlp": mlp_model}, datasets={"random": data, "other": other},
                seeds=2, metrics=["cross_entropy", "kl"], store=tmp_path, hypotheses_per_task=1, progress=False)
    real, calls = sweep_module._task, []

    def interrupted(*args):  # the driver is killed after its third task
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(sweep_module, "_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep(hyps, **grid)
    monkeypatch.setattr(sweep_module, "_task", real)
    summary = sweep(hyps, **grid)
    assert (summary.total, summary.reused, summary.computed) == (32, 6, 26)  # 3 tasks of 2 seeds were done
    assert sweep(hyps, **grid).computed == 0
    for model in (attn_model, mlp_model):
        for ds in (data, other):
            stored = scrub.evaluate_many(hyps, model, ds, seeds=2, metric="kl", store=tmp_path)
            assert _dump(stored) == _dump(scrub.evaluate_many(hyps, model, ds, seeds=2, metric="kl"))


def test_sweep_refuses_bad_input_before_any_forward_pass(attn_model, data, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module, "_task", None)  # any task would fail loudly
    with pytest.raises(OptionsError, match="executor"):
        sweep(_hyps(), [attn_model], [data], store=tmp_path, executor="dask")
    with pytest.raises(OptionsError, match="store"):
        sweep(_hyps(), [attn_model], [data], store=None)
    with pytest.raises(ScrubError, match="layer"):  # a head the model lacks
        sweep(_hyps(prev_head=(5, 0)), [attn_model], [data], store=tmp_path)
    assert not list(tmp_path.glob("cells/*/*.pt"))


def test_show_rebuilds_comparisons_from_the_store_alone(attn_model, data, tmp_path):
    hyps = _hyps()
    direct = scrub.compare(sorted(hyps, key=lambda h: h.name), attn_model, data,
                           options=RunOptions(seeds=2, store=tmp_path))
    (rebuilt,) = store_show.comparisons(tmp_path)
    assert _dump(rebuilt.results) == _dump(direct.results)
    assert [d.to_dict() for d in rebuilt.differences] == [d.to_dict() for d in direct.differences]
    text = store_show.show(tmp_path, tmp_path / "out")
    assert "Paired differences" in text and "head 1.0 naive" in text
    assert json.loads((tmp_path / "out" / "comparison-1.json").read_text())["kind"] == "scrub.comparison"
    with pytest.raises(ScrubError, match="not a result store"):
        store_show.show(tmp_path / "out")


SMALL_FILE = '''
import scrub
from scrub import EXACT, Embed, Feature, Head, Hypothesis

def model():
    return scrub.zoo.load("induction-2l")

def dataset():
    return scrub.tasks.induction(n=32, seed=0)

def hypotheses():
    a = Hypothesis("two heads")
    out = a.output()
    a.claim(Head(1, 0), EXACT, into=out)
    a.claim(Head(1, 1), EXACT, into=out)
    b = Hypothesis("head 1.0 naive")
    out = b.output()
    ind = b.claim(Head(1, 0), EXACT, into=out)
    b.claim(Embed(), Feature.token(), into=(ind, "q"))
    b.claim(Head(0, 3), Feature.prev_token(), into=(ind, "k"))
    return [a, b]
'''


def test_cli_sweep_show_and_compare_from_the_store(zoo, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(scrub.zoo, "load", lambda name, device=None: zoo[0])
    file = tmp_path / "hyps.py"
    file.write_text(SMALL_FILE)
    store = tmp_path / "runs"
    assert main(["sweep", str(file), "--store", str(store), "--seeds", "1", "--no-progress"]) == 0
    assert "2 computed" in capsys.readouterr().out
    assert main(["sweep", str(file), "--store", str(store), "--seeds", "1", "--no-progress"]) == 0
    assert "2 found" in capsys.readouterr().out
    assert main(["run", str(file), "--store", str(store), "--seeds", "1", "--no-progress"]) == 0
    assert (store / "reports" / "hyps.json").is_file()
    monkeypatch.setattr(scrub.api, "make_engine", None)  # from here on, no forward pass
    assert main(["compare", str(file), "--store", str(store), "--seeds", "1", "--no-progress"]) == 0
    assert main(["show", str(store), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "Paired differences" in out and (tmp_path / "out" / "comparison-1.html").is_file()
    assert "reports of hyps" in out and (tmp_path / "out" / "reports-hyps.html").is_file()
    (tmp_path / "a file").write_text("x")
    assert main(["sweep", str(file), "--store", str(tmp_path / "a file"), "--no-progress"]) == 2
    assert main(["show", str(tmp_path / "nothing here")]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "not a result store" in err


KILL_FILE = '''
from conftest import make_model, random_dataset
from scrub import EXACT, Head, Hypothesis

def model():
    return make_model(seed=0, attn_only=True)

def dataset():
    return random_dataset(n=400)

def hypotheses():
    out = []
    for a in range(3):
        for b in range(3):
            h = Hypothesis(f"heads 1.{a} 0.{b}")
            h.claim(Head(1, a), EXACT, into=h.output())
            h.claim(Head(0, b), EXACT, into=h.output())
            out.append(h)
    return out
'''


@pytest.mark.slow
def test_killed_driver_resumes_with_only_the_missing_cells(tmp_path):
    """A real driver process killed (SIGKILL) mid-sweep; the sweep started again computes the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    file = tmp_path / "hyps.py"
    file.write_text(KILL_FILE)
    store = tmp_path / "runs"
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}
    cmd = [sys.executable, "-m", "scrub", "sweep", str(file), "--store", str(store), "--seeds", "4",
           "--hypotheses-per-task", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(store.glob("cells/*/*.pt"))) < 8:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(store.glob("cells/*/*.pt")))
    assert 8 <= done < 36, "the driver was not killed mid-sweep"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    after = len(list(store.glob("cells/*/*.pt")))
    assert after == 36 and f"{after - done} computed" in again.stdout and f"{done} found" in again.stdout
