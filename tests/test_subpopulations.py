"""Where a hypothesis fails: per-row recovered loss, subpopulations, cancellation, worst_subpopulation."""

from __future__ import annotations

import json

import pytest
import torch

import scrub
from scrub import EXACT, Feature, Head, Hypothesis
from scrub.api import build_result
from scrub.errors import FeatureError, OptionsError, ReportError
from scrub.metrics import resolve
from scrub.reporting.subpopulations import group_lr, per_row, subpopulations
from scrub.search import worst_subpopulation

pytestmark = pytest.mark.usefixtures("one_thread")

HALF = Feature("half", lambda d: (torch.arange(len(d)) % 2).long())
THIRD = Feature("third", lambda d: (torch.arange(len(d)) % 3).long())


def _hyp() -> Hypothesis:
    h = Hypothesis("two heads")
    out = h.output()
    h.claim(Head(1, 0), EXACT, into=out)
    h.claim(Head(0, 1), EXACT, into=out)
    return h


@pytest.fixture(scope="module")
def result(attn_model, data):
    return scrub.evaluate(_hyp(), attn_model, data, seeds=2)


def test_per_row_mean_is_the_loss_recovered(result):
    r = per_row(result)
    assert float(r.mean()) == pytest.approx(result.loss_recovered, rel=1e-6)
    everything = group_lr(result, torch.ones(result.n_rows, dtype=torch.bool), 0.95)
    assert everything.value == pytest.approx(result.loss_recovered, rel=1e-6)


def test_groups_recombine_into_the_whole(result, data):
    """LR is a ratio of means: the groups' LRs, weighted by each group's share of the gap, give it back."""
    sub = subpopulations(result, data, [THIRD])
    m, b = result.rows.model.double(), result.rows.base.double().mean(0)
    ids = torch.arange(result.n_rows) % 3
    total_gap = float((b - m).sum())
    combined = sum(g.lr.value * float((b - m)[ids == int(g.label)].sum()) / total_gap for g in sub.by["third"])
    assert combined == pytest.approx(result.loss_recovered, rel=1e-6)
    assert sum(g.n_rows for g in sub.by["third"]) == result.n_rows
    assert sum(sub.histogram[1]) == result.n_rows
    k = sub.worst.n_rows
    assert k == max(1, -(-result.n_rows * 5 // 100))
    assert sub.worst.lr.value <= result.loss_recovered


def _fake(model_rows, base_rows, scrub_rows, data):
    ref = torch.arange(len(model_rows))
    return build_result("fake", "base", resolve("cross_entropy"), data, "none", [0], ref, model_rows,
                        base_rows[None], scrub_rows[None], {}, n_boot=50)


def test_cancellation_is_flagged_only_when_errors_cancel(data):
    n = 40
    m = torch.ones(n, dtype=torch.float64)
    b = torch.full((n,), 3.0, dtype=torch.float64)
    swing = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0).double()
    cancel = subpopulations(_fake(m, b, m + swing, data.head(n)), data.head(n))
    assert cancel.cancellation.flagged and cancel.cancellation.abs_mean == pytest.approx(0.0, abs=1e-12)
    assert cancel.cancellation.mean_abs == pytest.approx(0.5)
    assert any("cancel" in f for f in cancel.findings())
    honest = subpopulations(_fake(m, b, m + 0.5, data.head(n)), data.head(n))
    assert not honest.cancellation.flagged
    assert honest.cancellation.mean_abs == pytest.approx(honest.cancellation.abs_mean)


def test_report_shows_subpopulations(attn_model, data, tmp_path):
    rep = scrub.report(_hyp(), attn_model, data, seeds=1, by=[HALF], pairs=None, paths=False, alone=False)
    d = rep.to_dict()
    assert [g["label"] for g in d["subpopulations"]["by"]["half"]] == ["0", "1"]
    assert "Where it fails" in rep.to_html(tmp_path / "r.html").read_text()
    assert "worst 5% of rows" in str(rep)
    json.dumps(d)
    fig = rep.plot("subpopulations")  # the same numbers as a matplotlib figure
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["by half", "worst 5% of rows"]
    assert f"half=1 ({d['subpopulations']['by']['half'][1]['n_rows']} rows)" in [
        t.get_text() for t in fig.axes[0].get_yticklabels()]
    stairs = rep.plot("rows").axes[0].patches[0]
    assert list(stairs.get_data().values) == d["subpopulations"]["per_row_histogram"]["counts"]


def test_bad_by(attn_model, data):
    one = Feature("first row", lambda d: (torch.arange(len(d)) == 0).long())
    with pytest.raises(ReportError, match="single reference row"):
        scrub.report(_hyp(), attn_model, data, by=[one], pairs=None)
    with pytest.raises(FeatureError, match="per position"):
        scrub.report(_hyp(), attn_model, data, by=[Feature.token()], pairs=None)
    with pytest.raises(OptionsError, match="by"):
        scrub.report(_hyp(), attn_model, data, by="half", pairs=None)


def test_worst_subpopulation_is_the_minimum_over_conjunctions(attn_model, data, result):
    worst = worst_subpopulation(_hyp(), attn_model, data, [HALF, THIRD], min_size=5, seeds=2)
    # every candidate, scored independently
    half, third = torch.arange(len(data)) % 2, torch.arange(len(data)) % 3
    masks = [half == a for a in range(2)] + [third == c for c in range(3)]
    masks += [(half == a) & (third == c) for a in range(2) for c in range(3)]
    values = [group_lr(result, m, 0.95).value for m in masks]
    assert worst.candidates == len(masks)
    assert worst.lr.value == pytest.approx(min(values), rel=1e-6)
    assert "worst subpopulation" in str(worst)
    with pytest.raises(OptionsError, match="no conjunction"):
        worst_subpopulation(_hyp(), attn_model, data, [HALF], min_size=10_000)
    with pytest.raises(OptionsError, match="non-empty"):
        worst_subpopulation(_hyp(), attn_model, data, [])
