"""The HTML renderer and the report files: every figure and table is there, text is escaped,
values outside [0, 1] are never clipped, JSON round-trips, and files are written atomically.

One small real report (zoo model, 64 reference rows, one seed, no path variants) is built once
for the module; most tests then work on copies of its ``to_dict()``.
"""

from __future__ import annotations

import copy
import html
import importlib
import json
import math
import os
import re

import pytest

import scrub
from scrub import EXACT, Embed, Feature, Head, Hypothesis
from scrub.reporting.html import render_comparison, render_report, render_run
from scrub.reporting.results import Report

pytestmark = pytest.mark.zoo_api  # reports on the zoo model


def _hypothesis(name: str = "two induction heads") -> Hypothesis:
    h = Hypothesis(name)
    out = h.output()
    for head in (Head(1, 0), Head(1, 1)):
        ind = h.claim(head, EXACT, into=out, name=str(head))
        h.claim(Embed(), Feature.token(), into=(ind, "q"), name=f"Embed->{head}.q")
        h.claim(Head(0, 3), Feature.prev_token(), into=(ind, "k"), name=f"Head(0.3)->{head}.k")
    return h


@pytest.fixture(scope="module")
def model():
    return scrub.zoo.load("induction-2l")


@pytest.fixture(scope="module")
def report(model) -> Report:
    data = scrub.tasks.induction(n=256, seed=0)
    short = scrub.tasks.induction(n=128, seed=2, min_period=3, max_period=6, name="induction-short")
    return scrub.report(
        _hypothesis(), model, data, seeds=1, n=64, paths=False, subgraphs={"head 1.0 only": ["Head(1.0)"]},
        pairs=[("Head(1.0)", "Head(1.1)"), ("Head(0.3)->Head(1.0).k", "Head(1.1)")], datasets={"short repeats": short},
    )


@pytest.fixture(scope="module")
def comparison(model):
    data = scrub.tasks.induction(n=128, seed=0)
    heads = Hypothesis("heads only")
    out = heads.output()
    heads.claim(Head(1, 0), EXACT, into=out)
    heads.claim(Head(1, 1), EXACT, into=out)
    return scrub.compare([heads, _hypothesis()], model, data, seeds=1, n=64)


@pytest.fixture()
def data(report) -> dict:
    return copy.deepcopy(report.to_dict())


def _svg(page: str, cls: str) -> list[str]:
    return re.findall(rf'<svg class="{cls}".*?</svg>', page, flags=re.S)


def _nan_to_none(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


def test_page_holds_every_figure_and_table(data):
    page = render_report(data)
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    kinds = {s["kind"] for s in data["subgraphs"]}
    assert len(_svg(page, "bars")) == len(kinds) + 1  # one chart per kind of subgraph, and generality
    assert len(_svg(page, "dag")) == 1
    assert len(_svg(page, "heatmap")) == 2  # joint interaction and compensation rise
    for table in ("result", "subgraphs", "joint", "compensation", "generality", "claims", "edges", "findings-table", "meta"):
        assert f'<table class="{table}">' in page, table
    for s in data["subgraphs"]:
        assert html.escape(s["name"]) in page
    assert data["findings"], "the fixture should produce findings (tiny classes at least)"
    for finding in data["findings"]:
        assert html.escape(finding) in page
    versions = data["meta"]["versions"]
    for key in ("torch", "transformer_lens", "python", "scrub"):
        assert html.escape(versions[key]) in page
    assert data["meta"]["model"]["fingerprint"] in page and data["meta"]["dataset"]["fingerprint"] in page
    assert "short repeats" in page and "induction-short" in page


def test_lr_bars_one_chart_per_kind_each_led_by_the_full_hypothesis(data):
    page = render_report(data)
    kinds = list(dict.fromkeys(s["kind"] for s in data["subgraphs"]))
    charts = _svg(page, "bars")[: len(kinds)]
    for kind, svg in zip(kinds, charts):
        names = [s["name"] for s in data["subgraphs"] if s["kind"] == kind]
        assert svg.count('<g class="bar">') == 1 + len(names)
        assert svg.count('class="ref"') == 2 and ">0%<" in svg and ">100%<" in svg
        assert "full: " in svg and all(html.escape(n) in svg for n in names)
    for title in ("leave-one-out (claim removed)", "each claim alone", "named subgraphs"):
        assert f"<h4>{title}</h4>" in page


def _label_lines(svg: str) -> list[list[str]]:
    labels = re.findall(r'<text class="label"[^>]*>(.*?)</text>', svg)
    return [[html.unescape(t) for t in re.findall(r"<tspan[^>]*>(.*?)</tspan>", lab)] for lab in labels]


def test_long_labels_wrap_and_keep_their_qualifier(data):
    """A long subgraph name is wrapped onto several lines, never cut: its last word (the
    qualifier, e.g. "alone") and every other character stay visible, and so does every number."""
    from scrub.reporting.svg import CHAR

    long = "Embed->Head(1.0).q via a very long and descriptive claim name that goes on and on " * 2 + "alone"
    data["subgraphs"][0]["name"] = long
    data["subgraphs"][1]["result"].update(loss_recovered=-12.345, ci=[-20.5, -10.25])  # long number, off the axis
    svg = _svg(render_report(data), "bars")[0]
    lines = next(ls for ls in _label_lines(svg) if ls and ls[0].startswith("Embed->"))
    assert len(lines) > 1 and lines[-1].endswith("alone")
    assert "".join(lines).replace(" ", "") == long.replace(" ", "")
    width = float(re.search(r'viewBox="0 0 (\S+) ', svg).group(1))
    for x, text in re.findall(r'<text class="value" x="(\S+)"[^>]*>(.*?)</text>', svg):
        assert float(x) + CHAR * len(html.unescape(text)) <= width, text  # the number and its qualifier fit
    assert "-1234.5%  [-2050.0%, -1025.0%] \u25b8 off axis" in html.unescape(svg)


def test_bar_charts_stay_short_on_big_reports(data):
    """Hundreds of subgraphs: each kind is split into charts of bounded height, every one kept."""
    template = data["subgraphs"][0]
    subs = []
    for kind in ("leave-one-out", "alone", "path"):
        for i in range(70):
            s = copy.deepcopy(template)
            s.update(kind=kind, name=f"{kind} subgraph number {i} with a name long enough to wrap onto a second line")
            subs.append(s)
    data["subgraphs"] = subs
    page = render_report(data)
    charts = _svg(page, "bars")[:-1]  # the last one is generality
    heights = [float(re.search(r'height="(\S+)"', svg).group(1)) for svg in charts]
    assert len(charts) > 3 and max(heights) < 900
    assert sum(svg.count('<g class="bar">') for svg in charts) == len(subs) + len(charts)  # + the full bar in each
    assert "(part 1 of " in page
    for s in subs[::17]:
        assert html.escape(s["name"].split(" with")[0]) in page


def test_contribution_is_labelled_by_kind(data, report):
    page = render_report(data)
    assert "on leave-one-out rows the drop when the claim is removed" in page
    assert "what the rest of the hypothesis adds" in page and "<th>full \u2212 subgraph [CI]</th>" in page
    text = str(report)
    assert "full - subgraph [CI]" in text and "contribution [CI]" not in text
    assert "leave-one-out rows: the drop in LR when that claim is removed" in text
    assert "alone, path and named rows: what the rest of the hypothesis adds" in text


def test_redundancy_words_come_only_from_the_verdicts(data):
    """The page's legend states what a sign means; "OR-like" and "backup" appear only where a
    verdict or finding (computed upstream) says so, never as the renderer's own reading."""
    for j in data["redundancy"]["joint"]:
        j.update(verdict="additive", flagged=False)
        for k in ("drop_a", "drop_b"):
            j[k]["value"] = -0.05  # removing either raises loss recovered
        j["interaction"]["value"] = 0.08
    for c in data["redundancy"]["compensation"]:
        c["flagged"] = True
    data["findings"] = []
    page = render_report(data).lower()
    for word in ("or-like", "backup", "back each other up"):
        assert word not in page, word
    assert "super-additive" in page and html.escape("b's direct effect rises") in page
    data["redundancy"]["joint"][0]["verdict"] = "some verdict from build.py"
    assert "some verdict from build.py" in render_report(data)


def test_graph_has_one_node_per_claim_and_labelled_edges(data, report):
    svg = _svg(render_report(data), "dag")[0]
    nodes = data["graph"]["nodes"]
    assert len(nodes) == 7  # output + 2 heads x (head, q, k)
    assert svg.count('<g class="node">') == len(nodes)
    assert svg.count('class="port"') == len(data["graph"]["edges"])
    for n in nodes:
        assert html.escape(n["name"]) in svg
    for port in ("q", "k", "in"):
        assert f">{port}</text>" in svg


def test_graph_colours_unknown_contribution_grey_and_shows_positions(data):
    from scrub.reporting.svg import GREY

    data["graph"]["nodes"][2]["contribution"] = None
    data["graph"]["edges"][1]["positions"] = [3, 4]
    svg = _svg(render_report(data), "dag")[0]
    assert GREY in svg and "@3,4" in svg


def test_values_outside_the_axis_are_never_clipped(data):
    subs = data["subgraphs"]
    subs[0]["result"].update(loss_recovered=5.0, ci=[4.5, 5.5])
    subs[1]["result"].update(loss_recovered=-3.0, ci=[-3.5, -2.5])
    subs[2]["result"].update(loss_recovered=1.3, ci=[1.1, 1.5])
    subs[3]["result"].update(loss_recovered=float("nan"), ci=[None, None])
    svg = _svg(render_report(data), "bars")[0]
    assert "500.0%" in svg and "-300.0%" in svg and "130.0%" in svg and "n/a" in svg
    assert svg.count('class="overflow"') == 2  # 500% and -300% lie beyond the axis limits
    assert ">150.0%<" in svg  # 130% extends the axis past 100% instead of being clipped


def test_redundancy_matrix_marks_flagged_cells(data):
    for j in data["redundancy"]["joint"]:
        j["flagged"] = False
    for c in data["redundancy"]["compensation"]:
        c["flagged"] = False
    page = render_report(data)
    assert 'class="cell flagged"' not in page
    data["redundancy"]["joint"][0]["flagged"] = True
    data["redundancy"]["compensation"][1]["flagged"] = True
    page = render_report(data)
    joint, comp = _svg(page, "heatmap")
    assert joint.count('class="cell flagged"') == 1 and comp.count('class="cell flagged"') == 1
    assert joint.count('class="cell') == len(data["redundancy"]["joint"])


def test_text_is_escaped_and_page_is_self_contained(data):
    evil = '<script>alert("x")</script> & <b>'
    data["hypothesis"] = evil
    data["findings"].append(evil)
    old = data["graph"]["nodes"][1]["name"]
    data["graph"]["nodes"][1]["name"] = evil
    for e in data["graph"]["edges"]:
        e.update({k: evil for k in ("child", "parent") if e[k] == old})
    data["subgraphs"][0]["name"] = evil
    page = render_report(data)
    assert "<script" not in page and evil not in page
    assert html.escape(evil) in page
    assert not re.search(r"\b(src|href)=\"?(https?:)?//", page) and "<link" not in page


def test_page_from_json_file_equals_page_from_dict(report, data, tmp_path):
    """JSON turns NaN into null: the renderer shows both as n/a, so the pages are identical."""
    loaded = json.loads(report.to_json(tmp_path / "r.json").read_text())
    assert render_report(loaded) == render_report(data)


def test_json_round_trips(report, tmp_path):
    path = report.to_json(tmp_path / "out" / "report.json")
    assert json.loads(path.read_text(encoding="utf-8")) == _nan_to_none(report.to_dict())


def test_comparison_and_run_pages(comparison, report, data):
    cmp = comparison.to_dict()
    page = render_comparison(cmp)
    assert len(_svg(page, "bars")) == 2  # LR per hypothesis and paired differences
    for table in ("results", "differences", "meta"):
        assert f'<table class="{table}">' in page
    for d in cmp["differences"]:
        assert html.escape(d["verdict"]) in page
    other = copy.deepcopy(data)
    other["hypothesis"] = "second copy"
    run = render_run([data, other], cmp)
    assert '<table class="summary">' in run and 'id="report-0"' in run and 'id="report-1"' in run
    assert 'id="comparison"' in run and "second copy" in run
    assert len(_svg(run, "dag")) == 2


def test_html_is_written_atomically(report, tmp_path, monkeypatch):
    H = importlib.import_module("scrub.reporting.html")

    target = tmp_path / "report.html"
    report.to_html(target)
    assert "<svg" in target.read_text()

    def boom(data):
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(H, "render_report", boom)
    fresh = tmp_path / "fresh.html"
    with pytest.raises(RuntimeError, match="renderer failed"):
        report.to_html(fresh)
    assert not fresh.exists()
    with pytest.raises(RuntimeError):
        report.to_html(target)
    assert "<svg" in target.read_text()  # the previous file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary left behind


def test_json_is_written_atomically(report, tmp_path, monkeypatch):
    fresh = tmp_path / "r.json"
    monkeypatch.setattr(Report, "to_dict", lambda self: {"unserialisable": object()})
    with pytest.raises(TypeError):
        report.to_json(fresh)
    assert not fresh.exists()
    monkeypatch.undo()

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        report.to_json(fresh)
    assert not fresh.exists() and list(tmp_path.iterdir()) == []
