"""Matplotlib figures of results, reports and comparisons, for papers.

Each function takes the plain dict of a ``to_dict()`` (as the HTML renderer does) and returns a
`matplotlib.figure.Figure` built without pyplot: no global state, no display, no backend switch;
``fig.savefig(path)`` writes PNG, PDF or SVG through matplotlib's own (Agg / vector) canvases.

* `plot_result`: loss recovered with its confidence interval;
* `plot_report`: ``"lr"`` the full hypothesis and every subgraph (one panel per kind), ``"graph"``
  the hypothesis graph coloured by leave-one-out contribution, ``"redundancy"`` the joint-removal
  interaction and compensation matrices;
* `plot_comparison`: ``"lr"`` loss recovered per hypothesis, ``"differences"`` paired differences.

The charts follow the HTML report: 0% and 100% reference lines, values outside the axis limits
drawn to the edge with a red triangle while the printed number stays the true one, long labels
wrapped (never cut), unknown values grey.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.ticker import MaxNLocator

from scrub.errors import ReportError
from scrub.reporting.svg import GREY, axis_domain, fmt_num, fmt_pct, fnum, graph_layout, scale_max, wrap

__all__ = ["plot_result", "plot_report", "plot_comparison", "REPORT_KINDS", "COMPARISON_KINDS"]

REPORT_KINDS = ("lr", "graph", "redundancy", "subpopulations", "rows")
COMPARISON_KINDS = ("lr", "differences")
KIND_TITLES = {"leave-one-out": "leave-one-out (claim removed)", "alone": "each claim alone", "path": "root-to-leaf paths",
               "named": "named subgraphs"}
# the HTML report's diverging scale: blue (negative), near-white, red (positive)
DIVERGING = LinearSegmentedColormap.from_list("scrub", ["#2166ac", "#f7f7f7", "#b2182b"])
WRAP = 40  # characters per label line


def _row(label: str, r: dict, strong: bool = False) -> dict:
    lo, hi = (list(r.get("ci") or []) + [None, None])[:2]
    return {"label": str(label), "value": r.get("loss_recovered"), "lo": lo, "hi": hi, "strong": strong}


def _bars(ax, rows: Sequence[dict], *, refs: Sequence[tuple[float, str]] = ((0.0, "0%"), (1.0, "100%")),
          limits: tuple[float, float] = (-1.0, 2.0), fmt: Callable = fmt_pct, marker: Optional[float] = None,
          title: str = "", domain: Optional[tuple[float, float]] = None) -> None:
    """Horizontal bars with CI whiskers on ``ax``; the numbers are printed right of the axes."""
    lo_d, hi_d = domain or axis_domain(rows, refs=refs, limits=limits, marker=_marker(marker))
    ax.set_xlim(lo_d, hi_d)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    for v, name in refs:
        ax.axvline(v, color="#555", linestyle=(0, (4, 3)), linewidth=0.8, zorder=1)
    if marker is not None and math.isfinite(marker):
        ax.axvline(marker, color="#2a6f3f", linestyle=":", linewidth=1.0, zorder=1)
    clip = lambda x: min(max(x, lo_d), hi_d)  # noqa: E731
    for i, r in enumerate(rows):
        v, lo, hi = fnum(r.get("value")), fnum(r.get("lo")), fnum(r.get("hi"))
        if not math.isnan(v):
            ax.barh(i, clip(v) - clip(0.0), left=clip(0.0), height=0.6, color="#3b6ea8" if r.get("strong") else "#8fb3da",
                    zorder=2)
            for edge, beyond, d in ((hi_d, v > hi_d, ">"), (lo_d, v < lo_d, "<")):
                if beyond:
                    ax.plot([edge], [i], marker=d, color="#c0392b", markersize=7, zorder=4, clip_on=False)
        if math.isfinite(lo) and math.isfinite(hi):
            ax.plot([clip(lo), clip(hi)], [i, i], color="#222", linewidth=1, zorder=3)
            caps = [w for w in (lo, hi) if lo_d <= w <= hi_d]
            ax.plot(caps, [i] * len(caps), linestyle="none", marker="|", markersize=7, color="#222", zorder=3)
        over = " \u25b8 off axis" if math.isfinite(v) and not (lo_d <= v <= hi_d) else ""
        ax.text(1.02, i, f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]{over}", transform=ax.get_yaxis_transform(), va="center",
                fontsize=8, clip_on=False)
    ax.set_yticks(range(len(rows)), ["\n".join(wrap(r["label"], WRAP)) for r in rows], fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(7))
    ax.xaxis.set_major_formatter(lambda x, _: fmt(x))
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="#eee", zorder=0)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, loc="left", fontsize=9, fontweight="bold")


def _marker(value: Optional[float]) -> Optional[tuple[float, str]]:
    return None if value is None else (value, "")


def _lines(rows: Sequence[dict]) -> int:
    return sum(len(wrap(r["label"], WRAP)) for r in rows)


def _bar_figure(panels: Sequence[tuple[str, list[dict]]], **options) -> Figure:
    """One bar panel per ``(title, rows)``, stacked, each as tall as its rows need."""
    heights = [max(_lines(rows), 1) * 0.24 + 0.45 for _, rows in panels]
    fig = Figure(figsize=(7.5, sum(heights) + 0.5), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    every = [r for _, rows in panels for r in rows]  # one axis for all panels, so they can be compared
    domain = axis_domain(every, refs=options.get("refs", ((0.0, ""), (1.0, ""))),
                         limits=options.get("limits", (-1.0, 2.0)), marker=_marker(options.get("marker")))
    for ax, (title, rows) in zip(axes, panels):
        _bars(ax, rows, title=title, domain=domain, **options)
    return fig


def plot_result(d: dict) -> Figure:
    """Loss recovered of one `Result.to_dict()` with its confidence interval."""
    name = d.get("hypothesis", "hypothesis")
    level = fnum(d.get("ci_level"))
    title = f"{name}: loss recovered, {round(100 * level) if math.isfinite(level) else 95}% CI"
    return _bar_figure([(title, [_row(name, d, strong=True)])])


def plot_report(d: dict, kind: str = "lr") -> Figure:
    """A figure of one `Report.to_dict()`: ``kind`` is one of `REPORT_KINDS`."""
    if kind not in REPORT_KINDS:
        raise ReportError(f"Report.plot(kind={kind!r}): unknown figure; choose one of {list(REPORT_KINDS)}")
    if kind == "graph":
        return _graph_figure(d.get("graph") or {})
    if kind == "redundancy":
        return _redundancy_figure(d)
    if kind in ("subpopulations", "rows"):
        subpops = d.get("subpopulations")
        if not subpops:
            raise ReportError(
                f"Report.plot(kind={kind!r}): the report holds no subpopulation data (it was built before "
                f"scrub reported them); build it again with scrub.report(...)"
            )
        return _subpopulation_figure(subpops) if kind == "subpopulations" else _rows_figure(subpops)
    full = d.get("full") or {}
    name = d.get("hypothesis", full.get("hypothesis", "hypothesis"))
    full_row = _row(f"full: {name}", full, strong=True)
    subs = d.get("subgraphs") or []
    kinds = list(dict.fromkeys(s.get("kind") for s in subs))
    panels = [(KIND_TITLES.get(k, str(k)), [full_row] + [_row(s.get("name", ""), s.get("result") or {})
                                                          for s in subs if s.get("kind") == k]) for k in kinds]
    return _bar_figure(panels or [("full hypothesis", [full_row])], marker=fnum(full.get("loss_recovered")))


def plot_comparison(d: dict, kind: str = "lr") -> Figure:
    """A figure of one `Comparison.to_dict()`: ``kind`` is one of `COMPARISON_KINDS`."""
    if kind not in COMPARISON_KINDS:
        raise ReportError(f"Comparison.plot(kind={kind!r}): unknown figure; choose one of {list(COMPARISON_KINDS)}")
    if kind == "lr":
        rows = [_row(r.get("hypothesis", ""), r, strong=True) for r in d.get("results") or []]
        return _bar_figure([("loss recovered (same rows and seeds)", rows)])
    diffs = d.get("differences") or []
    if not diffs:
        raise ReportError("Comparison.plot(kind='differences'): the comparison holds no paired differences")
    rows = [{"label": f"{x.get('a')} \u2212 {x.get('b')}", "value": (x.get("difference") or {}).get("value"),
             "lo": ((x.get("difference") or {}).get("ci") or [None, None])[0],
             "hi": ((x.get("difference") or {}).get("ci") or [None, None])[-1]} for x in diffs]
    return _bar_figure([("paired difference in loss recovered: LR(a) \u2212 LR(b)", rows)], refs=((0.0, "0"),),
                       limits=(-2.0, 2.0))


def _colour(v, norm: Normalize):
    v = fnum(v)
    return GREY if math.isnan(v) else DIVERGING(norm(max(norm.vmin, min(norm.vmax, v))))


def _graph_figure(graph: dict) -> Figure:
    """Boxes in residual-stream columns (output last), edges child -> parent labelled with the port
    (and positions), boxes coloured by leave-one-out contribution (grey: unknown)."""
    nodes, edges, columns, _ = graph_layout(graph)
    if not nodes:
        raise ReportError("Report.plot(kind='graph'): the report holds no hypothesis graph")
    vmax = scale_max(n.get("contribution") for n in nodes)
    norm = Normalize(-vmax, vmax)
    tall = max(len(c) for c in columns)
    fig = Figure(figsize=(max(4.0, 2.3 * len(columns) + 1.2), max(2.2, 0.75 * tall + 0.9)), layout="constrained")
    ax = fig.add_subplot()
    bw, bh = 1.3, 0.5
    pos = {}
    for c, col in enumerate(columns):
        for i, name in enumerate(col):
            pos[name] = (c * 2.2, (tall - len(col)) / 2 + i)
    by_name = {n["name"]: n for n in nodes}
    ins: dict[str, list[dict]] = {}
    outs: dict[str, list[dict]] = {}
    for e in edges:
        ins.setdefault(e["parent"], []).append(e)
        outs.setdefault(e["child"], []).append(e)

    def anchor(name: str, e: dict, side: str) -> float:
        """Edges into (or out of) one box meet it at separate heights, ordered by the other end."""
        group = sorted(ins[name] if side == "in" else outs[name], key=lambda f: pos[f["child" if side == "in" else "parent"]][1])
        k = next(i for i, f in enumerate(group) if f is e)
        return pos[name][1] + (k - (len(group) - 1) / 2) * min(0.14, 0.8 * bh / max(len(group), 1))

    for e in edges:
        (xc, _), (xp, _) = pos[e["child"]], pos[e["parent"]]
        yc, yp = anchor(e["child"], e, "out"), anchor(e["parent"], e, "in")
        ax.add_patch(FancyArrowPatch((xc + bw / 2, yc), (xp - bw / 2, yp), arrowstyle="-|>", mutation_scale=9,
                                     color="#8a8a8a", linewidth=1, shrinkA=0, shrinkB=0, zorder=1))
        positions = e.get("positions")
        port = str(e.get("port", "")) + (f"@{','.join(map(str, positions))}" if positions else "")
        # the label sits on the edge just before the parent whose port it names (in the gap between columns)
        t = 1 - min(0.3, 0.5 * (xp - xc - bw)) / max(xp - xc - bw, 1e-9)
        ax.text(xc + bw / 2 + t * (xp - xc - bw), yc + t * (yp - yc), port, ha="center", va="center", fontsize=7,
                color="#333", bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6}, zorder=3)
    for name, (x, y) in pos.items():
        n = by_name[name]
        c = n.get("contribution")
        root = str(n.get("component")) == "Output"
        fill = "#eef3e8" if root and math.isnan(fnum(c)) else _colour(c, norm)
        ax.add_patch(FancyBboxPatch((x - bw / 2, y - bh / 2), bw, bh, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    facecolor=fill, edgecolor="#2a6f3f" if root else "#555", linewidth=1.6 if root else 0.8,
                                    zorder=2))
        sub = "model output" if root else f"\u0394LR {fmt_pct(c)}"
        ink = "white" if math.isfinite(fnum(c)) and abs(fnum(c)) / vmax > 0.6 else "#222"
        ax.text(x, y - 0.07, "\n".join(wrap(str(name), 22)), ha="center", va="center", fontsize=7, fontweight="bold",
                color=ink, zorder=3)
        ax.text(x, y + 0.16, sub, ha="center", va="center", fontsize=6.5, color=ink, zorder=3)
    ax.set_xlim(-bw / 2 - 0.5, (len(columns) - 1) * 2.2 + bw / 2 + 0.2)
    ax.set_ylim(tall - 0.4, -0.6)
    ax.set_axis_off()
    bar = fig.colorbar(_mappable(norm), ax=ax, orientation="horizontal", fraction=0.05, aspect=40)
    bar.set_label("contribution: leave-one-out drop in loss recovered (grey: unknown)", fontsize=8)
    bar.ax.xaxis.set_major_formatter(lambda v, _: fmt_pct(v))
    bar.ax.tick_params(labelsize=7)
    return fig


def _mappable(norm: Normalize):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=DIVERGING)


def _matrix(fig, ax, pairs: Sequence[dict], key: str, fmt: Callable, title: str, label: str) -> None:
    rows = list(dict.fromkeys(p.get("a") for p in pairs))
    cols = list(dict.fromkeys(p.get("b") for p in pairs))
    vmax = scale_max((p.get(key) or {}).get("value") for p in pairs)
    norm = Normalize(-vmax, vmax)
    for p in pairs:
        i, j = rows.index(p.get("a")), cols.index(p.get("b"))
        v = (p.get(key) or {}).get("value")
        flagged = bool(p.get("flagged"))
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=_colour(v, norm), edgecolor="black" if flagged else "#ddd",
                               linewidth=2.5 if flagged else 0.8, zorder=2 if flagged else 1))
        ink = "white" if math.isfinite(fnum(v)) and abs(fnum(v)) / vmax > 0.6 else "#222"
        ax.text(j, i, fmt(v) + (" !" if flagged else ""), ha="center", va="center", fontsize=7, color=ink, zorder=3)
    ax.set_xlim(-0.5, len(cols) - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xticks(range(len(cols)), ["\n".join(wrap(str(c), 18)) for c in cols], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), ["\n".join(wrap(str(r), 24)) for r in rows], fontsize=7)
    ax.set_xlabel("b (downstream)", fontsize=8)
    ax.set_ylabel("a", fontsize=8)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=8.5, loc="left")
    bar = fig.colorbar(_mappable(norm), ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(label, fontsize=7)
    bar.ax.yaxis.set_major_formatter(lambda v, _: fmt(v))
    bar.ax.tick_params(labelsize=7)


def _redundancy_figure(d: dict) -> Figure:
    """The joint-removal interaction and the compensation rise as claim-by-claim matrices;
    flagged pairs are outlined and marked "!"."""
    red = d.get("redundancy") or {}
    joint, comp = red.get("joint") or [], red.get("compensation") or []
    if not joint and not comp:
        raise ReportError("Report.plot(kind='redundancy'): no redundancy pairs were checked; run scrub.report "
                          "with pairs='downstream' or a list of claim-name pairs")
    metric = (d.get("full") or {}).get("metric", "metric")
    panels = [p for p in (("interaction", joint), ("rise", comp)) if p[1]]
    n = max(len({p.get("a") for p in joint + comp}), len({p.get("b") for p in joint + comp}))
    fig = Figure(figsize=(4.2 * len(panels) + 0.6 * min(n, 10), 1.2 + 0.45 * n + 1.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, pairs) in zip(axes, panels):
        if key == "interaction":
            _matrix(fig, ax, pairs, key, fmt_pct, "joint removal:\ndrop(a,b) \u2212 drop(a) \u2212 drop(b)",
                    "interaction (loss recovered)")
        else:
            _matrix(fig, ax, pairs, key, fmt_num, "compensation: rise of b's\ndirect effect, a knocked out",
                    f"rise ({metric})")
    return fig


def _group_row(label: str, g: dict) -> dict:
    est = g.get("loss_recovered") or {}
    lo, hi = (list(est.get("ci") or []) + [None, None])[:2]
    return {"label": f"{label} ({g.get('n_rows')} rows)", "value": est.get("value"), "lo": lo, "hi": hi}


def _subpopulation_figure(s: dict) -> Figure:
    """Loss recovered within each value of every ``by=`` feature, and on the worst rows, with CIs."""
    panels = [(f"by {name}", [_group_row(f"{name}={g.get('label')}", g) for g in groups])
              for name, groups in (s.get("by") or {}).items() if groups]
    worst = s.get("worst") or {}
    share = fnum(worst.get("fraction"))
    label = f"worst {round(100 * share)}% of rows" if math.isfinite(share) else "worst rows"
    panels.append((label, [_group_row(label, worst)]))
    return _bar_figure(panels)


def _rows_figure(s: dict) -> Figure:
    """The histogram of per-row recovered loss, with the cancellation check in the title."""
    hist = s.get("per_row_histogram") or {}
    edges = [fnum(x) for x in hist.get("edges") or []]
    counts = list(hist.get("counts") or [])
    fig = Figure(figsize=(7.5, 3.0), layout="constrained")
    ax = fig.subplots()
    if len(edges) == len(counts) + 1 and counts:
        ax.stairs(counts, edges, fill=True, color="#8fb3da", edgecolor="#3b6ea8")
    for v in (0.0, 1.0):
        ax.axvline(v, color="#555", linestyle=(0, (4, 3)), linewidth=0.8)
    c = s.get("cancellation") or {}
    flag = "  \u2190 errors cancel" if c.get("flagged") else ""
    ax.set_title(f"per-row recovered loss; mean |scrub \u2212 model| {fmt_pct(fnum(c.get('mean_abs_difference')))} of the "
                 f"gap, |mean| {fmt_pct(fnum(c.get('abs_mean_difference')))}{flag}", loc="left", fontsize=9, fontweight="bold")
    ax.set_xlabel("recovered loss of one row ((base_i \u2212 scrub_i) / mean gap)", fontsize=8)
    ax.set_ylabel("rows", fontsize=8)
    ax.xaxis.set_major_formatter(lambda x, _: fmt_pct(x))
    ax.tick_params(labelsize=8)
    return fig
