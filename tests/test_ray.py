"""Sweeps and sharded evaluations on a local Ray cluster started here (2 CPUs, one per module).

Faults: a worker killed mid-task is retried; a restarted sweep computes only the missing cells; a
half-written cell is not read; an address that does not answer is a clear error, nothing lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import scrub
from scrub import Feature
from scrub.store.on_ray import RayError
from scrub.store.sweep import evaluate_sharded, sweep

from conftest import two_small_hypotheses

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """A local Ray cluster whose workers import this checkout's scrub."""
    if ray.is_initialized():
        ray.shutdown()
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([before] if before else []))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()
    if before is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = before


def _hyps(token=None):
    return two_small_hypotheses(token=token)


def _dump(results) -> list:
    return [json.dumps(r.to_dict(), sort_keys=True) for r in results]


def _cells(path) -> int:
    return len(list((Path(path) / "cells").glob("*/*.pt")))


def test_sharded_on_ray_equals_unsharded(attn_model, data):
    hyps = _hyps()
    plain = scrub.evaluate_many(hyps, attn_model, data, seeds=2)
    sharded = evaluate_sharded(hyps, attn_model, data, shards=3, seeds=2, executor="ray")
    assert _dump(sharded) == _dump(plain)
    for p, s in zip(plain, sharded):
        assert torch.equal(p.rows.scrub, s.rows.scrub) and torch.equal(p.rows.model, s.rows.model)


def test_ray_sweep_retries_a_killed_worker_and_resumes(attn_model, data, tmp_path):
    marker = tmp_path / "killed once"
    driver = os.getpid()

    def token_or_die(d):
        if os.getpid() != driver and not marker.exists():  # the first time it runs in a worker
            marker.touch()
            os._exit(1)  # the worker dies mid-task
        return d.tokens

    hyps = _hyps(Feature("token", token_or_die))
    store = tmp_path / "runs"
    # a half-written cell from an earlier crash: never read, the cell is computed
    first = sweep(hyps[:1], [attn_model], [data], seeds=[0], store=store, executor="ray", progress=False)
    (cell,) = (store / "cells").glob("*/*.pt")
    (cell.parent / f".{cell.name}.ab12.tmp").write_bytes(cell.read_bytes()[:64])
    cell.unlink()
    summary = sweep(hyps, {"m": attn_model}, {"d": data}, seeds=2, store=store, executor="ray",
                    hypotheses_per_task=1, max_retries=2, progress=False)
    assert marker.exists()  # a worker was killed, and its task retried
    assert (first.computed, summary.total, summary.reused, summary.computed) == (1, 4, 0, 4)
    again = sweep(hyps, {"m": attn_model}, {"d": data}, seeds=3, store=store, executor="ray", progress=False)
    assert (again.total, again.reused, again.computed) == (6, 4, 2)  # only the missing cells
    stored = scrub.evaluate_many(_hyps(), attn_model, data, seeds=3, store=store)
    assert _dump(stored) == _dump(scrub.evaluate_many(_hyps(), attn_model, data, seeds=3))


def test_unreachable_ray_address_is_refused_and_nothing_lost(attn_model, data, tmp_path):
    store = tmp_path / "runs"
    sweep(_hyps()[:1], [attn_model], [data], store=store, progress=False)
    before = sorted(p.name for p in store.rglob("*"))
    with pytest.raises(RayError, match="does not answer"):
        sweep(_hyps(), [attn_model], [data], seeds=2, store=store, executor="ray", address="127.0.0.1:9",
              progress=False)
    with pytest.raises(RayError, match="not host:port"):
        evaluate_sharded(_hyps(), attn_model, data, executor="ray", address="nowhere")
    assert sorted(p.name for p in store.rglob("*")) == before


SMALL_FILE = '''
from conftest import make_model, random_dataset
from scrub import EXACT, Head, Hypothesis

def model():
    return make_model(seed=0, attn_only=True)

def dataset():
    return random_dataset()

def hypotheses():
    out = []
    for head in range(3):
        h = Hypothesis(f"head 1.{head}")
        h.claim(Head(1, head), EXACT, into=h.output())
        out.append(h)
    return out
'''


@pytest.mark.requires_hooked  # its hypothesis file builds a HookedTransformer
def test_cli_sweep_on_ray(tmp_path, capsys):
    from scrub.cli import main

    file = tmp_path / "hyps.py"
    file.write_text(SMALL_FILE)
    store = tmp_path / "runs"
    args = ["sweep", str(file), "--store", str(store), "--seeds", "2", "--no-progress", "--hypotheses-per-task", "1"]
    assert main([*args, "--ray"]) == 0
    assert "6 computed in 3 tasks" in capsys.readouterr().out
    assert _cells(store) == 6
    assert main([*args, "--ray", "127.0.0.1:9"]) == 2
    assert "does not answer" in capsys.readouterr().err
