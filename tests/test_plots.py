"""Matplotlib figures for papers: every kind saves to PNG, PDF and SVG without a display, draws
what it claims (one bar per subgraph, one box per claim, one cell per pair), keeps numbers and
labels whole, and refuses kinds it does not have."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.figure import Figure

import report_values as V
from scrub.errors import ReportError
from scrub.reporting.svg import wrap

MAGIC = {"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}


def _texts(fig: Figure) -> list[str]:
    out = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return [t for t in out if t]


@pytest.mark.parametrize("fmt", sorted(MAGIC))
def test_every_figure_saves_in_every_format(fmt, tmp_path):
    rep, cmp = V.report(), V.comparison()
    figures = {"result": rep.full.plot(), "comparison-lr": cmp.plot(), "comparison-diff": cmp.plot("differences"),
               **{f"report-{k}": rep.plot(k) for k in ("lr", "graph", "redundancy")}}
    for name, fig in figures.items():
        assert isinstance(fig, Figure)
        path = tmp_path / f"{name}.{fmt}"
        fig.savefig(path)
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(MAGIC[fmt]), name


def test_figures_need_no_pyplot_and_no_display():
    import scrub.reporting.plot as P

    source = open(P.__file__, encoding="utf-8").read()
    assert "pyplot" not in source.split('"""', 2)[2]  # no global figure manager, no backend switch
    assert V.report().plot().canvas.get_default_filetype() == "png"


def test_lr_figure_has_a_panel_per_kind_and_a_bar_per_subgraph():
    rep = V.report()
    fig = rep.plot("lr")
    kinds = list(dict.fromkeys(s.kind for s in rep.subgraphs))
    assert [ax.get_title(loc="left") for ax in fig.axes] == [
        {"leave-one-out": "leave-one-out (claim removed)", "alone": "each claim alone", "path": "root-to-leaf paths",
         "named": "named subgraphs"}[k] for k in kinds]
    for ax, kind in zip(fig.axes, kinds):
        n = sum(s.kind == kind for s in rep.subgraphs)
        assert len(ax.patches) == 1 + n  # the full hypothesis, then each subgraph
    texts = _texts(fig)
    assert "260.0% [220.0%, 300.0%] \u25b8 off axis" in texts  # beyond the axis: the true number, marked
    assert "-140.0% [-170.0%, -110.0%] \u25b8 off axis" in texts and "82.0% [79.0%, 85.0%]" in texts


def test_long_labels_wrap_in_figures():
    rep = V.report(long_labels=True)
    fig = rep.plot("lr")
    ticks = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
    for s in rep.subgraphs:
        label = next(t for t in ticks if t.replace("\n", "").replace(" ", "") == s.name.replace(" ", ""))
        assert label.endswith("alone") or s.kind != "alone"


def test_graph_figure_colours_every_claim():
    rep = V.report()
    fig = rep.plot("graph")
    texts = _texts(fig)
    for node in rep.graph["nodes"]:
        assert any(t.replace("\n", "") == node["name"] for t in texts), node["name"]
    for edge in rep.graph["edges"]:
        port = edge["port"] + (f"@{','.join(map(str, edge['positions']))}" if edge["positions"] else "")
        assert port in texts
    assert "\u0394LR n/a" in texts  # the unknown contribution is shown as such


def test_redundancy_figure_has_a_cell_per_pair_and_marks_flags():
    rep = V.report()
    fig = rep.plot("redundancy")
    texts = _texts(fig)
    assert "10.0% !" in texts and "-1.0%" in texts  # flagged and not flagged interactions
    assert "1.050 !" in texts and "-0.250" in texts  # compensation rises


def test_unknown_kinds_and_empty_figures_are_refused():
    import attrs

    rep, cmp = V.report(), V.comparison()
    with pytest.raises(ReportError, match="choose one of \\['lr', 'graph', 'redundancy', 'subpopulations', 'rows'\\]"):
        rep.plot("bars")
    with pytest.raises(ReportError, match="no redundancy pairs were checked"):
        attrs.evolve(rep, joint=(), compensation=()).plot("redundancy")
    with pytest.raises(ReportError, match="choose one of \\['lr', 'differences'\\]"):
        cmp.plot("graph")
    with pytest.raises(ReportError, match="no paired differences"):
        attrs.evolve(cmp, differences=()).plot("differences")


@given(st.text(st.characters(codec="ascii", exclude_characters="\r\n\t\x0b\x0c"), max_size=200), st.integers(4, 60))
def test_wrap_keeps_every_character_and_bounds_every_line(text, width):
    lines = wrap(text, width)
    assert all(len(line) <= width for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    if len(text) <= width:
        assert lines == [text]


def _with_subpopulations(rep, flagged: bool = True):
    import attrs

    from scrub.reporting.subpopulations import Cancellation, GroupLR, Subpopulations

    by = {"period": (GroupLR("2", 40, V.estimate(0.91, 0.02)), GroupLR("5", 35, V.estimate(0.42, 0.05))),
          "noise": (GroupLR("0", 60, V.estimate(0.77, 0.03)), GroupLR("1", 15, V.estimate(0.31, 0.09)))}
    hist = ((-0.5, 0.0, 0.5, 1.0, 1.5), (3, 10, 40, 22))
    subs = Subpopulations(by=by, histogram=hist, worst=GroupLR("worst", 4, V.estimate(-0.62, 0.11)),
                          worst_fraction=0.05, cancellation=Cancellation(0.48, 0.21, flagged))
    return attrs.evolve(rep, subpopulations=subs)


def test_subpopulation_figure_has_a_panel_per_feature_and_the_worst_rows(tmp_path):
    fig = _with_subpopulations(V.report()).plot("subpopulations")
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["by period", "by noise", "worst 5% of rows"]
    assert [len(ax.patches) for ax in fig.axes] == [2, 2, 1]  # one bar per group
    ticks = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
    assert "period=5 (35 rows)" in ticks and "worst 5% of rows (4 rows)" in ticks
    texts = _texts(fig)
    assert "42.0% [37.0%, 47.0%]" in texts and "-62.0% [-73.0%, -51.0%]" in texts
    fig.savefig(tmp_path / "s.png")


def test_rows_figure_draws_the_histogram_and_the_cancellation_check(tmp_path):
    fig = _with_subpopulations(V.report()).plot("rows")
    (ax,) = fig.axes
    (stairs,) = [p for p in ax.patches]
    assert list(stairs.get_data().values) == [3, 10, 40, 22]
    assert list(stairs.get_data().edges) == [-0.5, 0.0, 0.5, 1.0, 1.5]
    title = ax.get_title(loc="left")
    assert "48.0%" in title and "21.0%" in title and "errors cancel" in title
    calm = _with_subpopulations(V.report(), flagged=False).plot("rows")
    assert "errors cancel" not in calm.axes[0].get_title(loc="left")
    fig.savefig(tmp_path / "r.pdf")


def test_subpopulation_figures_need_subpopulation_data():
    for kind in ("subpopulations", "rows"):
        with pytest.raises(ReportError, match="holds no subpopulation data"):
            V.report().plot(kind)
