"""Inline SVG figures for the HTML report, drawn by hand (no plotting library, no scripts).

* `bars`: horizontal bars with confidence-interval whiskers and reference lines; values outside
  the axis limits are drawn to the edge with an overflow mark, their numbers are never clipped;
* `dag`: the hypothesis graph, columns by residual-stream stage (left to right, output last),
  edges labelled with port and positions, nodes coloured by contribution;
* `heatmap`: a claim-by-claim matrix with flagged cells outlined;
* `wrap`, `paginate`, `graph_layout`, `axis_domain`: the layout rules, shared with the
  matplotlib figures of `scrub.reporting.plot` so both draw the same things the same way.

They are drawn by hand rather than through matplotlib's SVG output because the page needs what
that output lacks: a tooltip (``<title>``) on every bar, node and cell, real text, no ids repeated
across the dozens of figures of a run page, and milliseconds rather than seconds per figure.

Every function takes plain JSON data (as ``to_dict`` or a JSON file gives it: NaN may be ``None``,
infinities the strings ``"inf"``/``"-inf"``) and returns an ``<svg>`` string; all text is escaped.
"""

from __future__ import annotations

import math
import re
from html import escape
from typing import Callable, Iterable, Optional, Sequence

__all__ = ["esc", "fnum", "fmt_pct", "fmt_num", "diverging", "bars", "axis_domain", "label_width", "paginate", "wrap",
           "graph_layout", "dag", "heatmap", "legend", "GREY"]

FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"
CHAR = 6.3  # mean width of an 11px character, for layout estimates
GREY = "#c8c8c8"


def esc(x) -> str:
    return escape("" if x is None else str(x), quote=True)


def fnum(x) -> float:
    """A float from a JSON value: ``None`` and non-numbers become NaN, ``"inf"`` becomes inf."""
    if x is None or isinstance(x, bool):
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _special(v: float) -> Optional[str]:
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "+inf" if v > 0 else "-inf"
    return None


def fmt_pct(x, digits: int = 1) -> str:
    v = fnum(x)
    return _special(v) or f"{100 * v:.{digits}f}%"


def fmt_num(x, digits: int = 3) -> str:
    v = fnum(x)
    return _special(v) or f"{v:.{digits}f}"


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def diverging(v, vmax: float) -> str:
    """Blue (negative) - white - red (positive); grey when ``v`` is unknown."""
    v = fnum(v)
    if math.isnan(v):
        return GREY
    t = max(-1.0, min(1.0, v / vmax)) if vmax > 0 else 0.0
    lo, mid, hi = (33, 102, 172), (247, 247, 247), (178, 24, 43)
    end = hi if t > 0 else lo
    rgb = [round(m + abs(t) * (e - m)) for m, e in zip(mid, end)]
    return "#%02x%02x%02x" % tuple(rgb)


def _ink(v, vmax: float) -> str:
    v = fnum(v)
    return "#fff" if not math.isnan(v) and vmax > 0 and abs(v) / vmax > 0.6 else "#222"


def scale_max(values) -> float:
    """A round symmetric limit for a diverging scale (at least 0.01)."""
    m = max([abs(v) for v in map(fnum, values) if math.isfinite(v)] + [0.01])
    step = 10 ** math.floor(math.log10(m))
    return next(k * step for k in (1, 2, 2.5, 5, 10) if k * step >= m - 1e-12)


def legend(vmax: float, fmt: Callable = fmt_pct, label: str = "", unknown: bool = True) -> str:
    """Swatches from -vmax to +vmax (and grey for unknown)."""
    n, w, m = 11, 24, 22  # swatches, swatch width, left margin (room for the first number, centred below)
    text_x = m + n * w + 20 + (2 * w + 10 if unknown else 0)
    parts = [f'<svg class="legend" width="{text_x + int(5.8 * len(label)) + 10}" height="34" role="img" '
             f'style="{FONT};font-size:10px"><g transform="translate({m},0)">']
    for i in range(n):
        v = vmax * (2 * i / (n - 1) - 1)
        parts.append(f'<rect x="{i * w}" y="2" width="{w}" height="12" fill="{diverging(v, vmax)}"><title>{esc(fmt(v))}</title></rect>')
    for i, v in ((0, -vmax), (n // 2, 0.0), (n - 1, vmax)):
        parts.append(f'<text x="{i * w + w / 2}" y="27" text-anchor="middle">{esc(fmt(v))}</text>')
    if unknown:
        parts.append(f'<rect x="{n * w + 26}" y="2" width="{w}" height="12" fill="{GREY}"/>'
                     f'<text x="{n * w + 26 + w / 2}" y="27" text-anchor="middle">unknown</text>')
    parts.append("</g>")
    if label:
        parts.append(f'<text x="{text_x}" y="12">{esc(label)}</text>')
    return "".join(parts) + "</svg>"


def _ticks(lo: float, hi: float) -> list[float]:
    span = hi - lo
    step = next(s for s in (0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, math.inf) if span / s <= 10)
    if not math.isfinite(step):
        return [lo, hi]
    first = math.ceil(lo / step - 1e-9)
    return [k * step for k in range(first, int(math.floor(hi / step + 1e-9)) + 1)]


LINE = 13  # px per line of an 11px label
MAX_LABEL_W = 340  # px: longer labels wrap onto more lines, they are never cut


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken after spaces, arrows and
    punctuation where possible and inside a word only when it alone is longer; nothing is dropped."""
    width = max(width, 4)
    if len(text) <= width:
        return [text]
    tokens = re.findall(r"[^ ,;:>.)\]-]*(?:[ ,;:>.)\]-]+|$)", text)
    lines, line = [], ""
    for tok in filter(None, tokens):
        while len(tok) > width:  # a single over-long word: split it
            if line:
                lines.append(line)
                line = ""
            lines.append(tok[:width])
            tok = tok[width:]
        if len(line) + len(tok.rstrip(" ")) > width and line:
            lines.append(line)
            line = ""
        line += tok
    if line:
        lines.append(line)
    return [ln.rstrip(" ") for ln in lines if ln.strip(" ")] or [""]


def label_width(labels: Iterable[str]) -> int:
    """The label column of a bar chart: as wide as the longest label, at most `MAX_LABEL_W`."""
    return int(min(MAX_LABEL_W, max(110, CHAR * max([len(s) for s in labels] + [8]) + 12)))


def bar_lines(label: str) -> int:
    """How many lines ``label`` takes in a chart whose label column is as wide as it gets."""
    return len(wrap(label, int(MAX_LABEL_W / CHAR)))


def bar_text(r: dict, fmt: Callable, lo_d: float, hi_d: float) -> str:
    """The number printed beside a bar: value, interval and, when off the axis, a mark saying so."""
    v, lo, hi = fnum(r.get("value")), fnum(r.get("lo")), fnum(r.get("hi"))
    over = " \u25b8 off axis" if math.isfinite(v) and not (lo_d <= v <= hi_d) else ""
    return f"{fmt(v)}  [{fmt(lo)}, {fmt(hi)}]{over}"


def axis_domain(rows: Sequence[dict], *, refs: Sequence[tuple[float, str]] = ((0.0, "0%"), (1.0, "100%")),
                limits: tuple[float, float] = (-1.0, 2.0), marker: Optional[tuple[float, str]] = None) -> tuple[float, float]:
    """The x range of a bar chart: every number and reference value, within ``limits``, padded."""
    nums = [fnum(r.get(k)) for r in rows for k in ("value", "lo", "hi")]
    nums = [v for v in nums if math.isfinite(v)] + [v for v, _ in refs]
    nums += [marker[0]] if marker and math.isfinite(fnum(marker[0])) else []
    lo_d, hi_d = max(limits[0], min(nums)), min(limits[1], max(nums))
    pad = 0.04 * max(hi_d - lo_d, 1e-6)
    return lo_d - pad, hi_d + pad


def bars(rows: Sequence[dict], *, refs: Sequence[tuple[float, str]] = ((0.0, "0%"), (1.0, "100%")),
         limits: tuple[float, float] = (-1.0, 2.0), fmt: Callable = fmt_pct, marker: Optional[tuple[float, str]] = None,
         width: int = 960, layout_rows: Optional[Sequence[dict]] = None) -> str:
    """Horizontal bars for ``rows`` (dicts with ``label``, ``value``, ``lo``, ``hi`` and optional
    ``group`` (a header drawn before the first row of each group), ``strong`` and ``tip``).

    The axis spans the reference values and every number, within ``limits``; a bar or whisker
    beyond a limit stops at the edge with a triangle, and its text shows the true number. Long
    labels wrap onto several lines and the column of numbers is as wide as its longest text, so
    no label and no number is ever cut; the chart widens beyond ``width`` when it must. Charts
    meant to be read together pass the rows of all of them as ``layout_rows``: the label column,
    the axis and the column of numbers are then laid out for those, so the charts line up.
    """
    every = list(layout_rows or rows)
    lo_d, hi_d = axis_domain(every, refs=refs, limits=limits, marker=marker)
    labels = [str(r.get("label", "")) for r in rows]
    label_w = label_width(str(r.get("label", "")) for r in every)
    wrapped = [wrap(s, int(label_w / CHAR)) for s in labels]
    texts = [bar_text(r, fmt, lo_d, hi_d) for r in rows]
    text_w = int(CHAR * max([len(bar_text(r, fmt, lo_d, hi_d)) for r in every] + [10]) + 24)
    x0 = label_w + 8
    width = max(width, x0 + 360 + text_w)
    x1 = width - text_w
    rh, gh, top = 18, 22, 30
    heights = [rh + LINE * (len(w) - 1) for w in wrapped]
    n_groups = len({r.get("group") for r in rows if r.get("group")})
    height = top + sum(heights) + gh * n_groups + 24

    def X(v: float) -> float:
        return x0 + (min(max(v, lo_d), hi_d) - lo_d) / (hi_d - lo_d) * (x1 - x0)

    out = [f'<svg class="bars" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'style="{FONT};font-size:11px">']
    for t in _ticks(lo_d, hi_d):
        out.append(f'<line x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{top - 4}" y2="{height - 20}" stroke="#eee"/>'
                   f'<text x="{X(t):.1f}" y="{height - 6}" text-anchor="middle" fill="#777">{esc(fmt(t))}</text>')
    for v, name in refs:
        out.append(f'<line class="ref" x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{top - 6}" y2="{height - 20}" stroke="#555" '
                   f'stroke-dasharray="4 3"/><text x="{X(v):.1f}" y="{top - 10}" text-anchor="middle">{esc(name)}</text>')
    if marker and math.isfinite(marker[0]):
        mx = X(marker[0])
        out.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{top - 6}" y2="{height - 20}" stroke="#2a6f3f" stroke-dasharray="1 2"/>'
                   f'<text x="{mx:.1f}" y="{top - 20}" text-anchor="middle" fill="#2a6f3f">{esc(marker[1])}</text>')
    y, group = top, None
    for r, label, lines, text, h in zip(rows, labels, wrapped, texts, heights):
        if r.get("group") and r.get("group") != group:
            group = r["group"]
            out.append(f'<text x="4" y="{y + 15}" font-weight="600">{esc(group)}</text>')
            y += gh
        v, lo, hi = fnum(r.get("value")), fnum(r.get("lo")), fnum(r.get("hi"))
        tip = r.get("tip") or f"{label}: {text}"
        tspans = "".join(f'<tspan x="{label_w}" dy="{0 if i == 0 else LINE}">{esc(ln)}</tspan>' for i, ln in enumerate(lines))
        out.append(f'<g class="bar"><title>{esc(tip)}</title><text class="label" x="{label_w}" y="{y + 13}" '
                   f'text-anchor="end">{tspans}</text>')
        yb = y + (h - rh) / 2  # the bar sits in the middle of its (possibly wrapped) label
        if not math.isnan(v):
            a, b = sorted((X(0.0), X(v)))
            fill = "#3b6ea8" if r.get("strong") else "#8fb3da"
            out.append(f'<rect x="{a:.1f}" y="{yb + 3:.1f}" width="{max(b - a, 0.5):.1f}" height="{rh - 6}" fill="{fill}"/>')
            for edge, beyond, d in ((hi_d, v > hi_d, 1), (lo_d, v < lo_d, -1)):
                if beyond:
                    ex = X(edge)
                    out.append(f'<polygon class="overflow" points="{ex:.1f},{yb + 2:.1f} {ex + 7 * d:.1f},{yb + rh / 2:.1f} '
                               f'{ex:.1f},{yb + rh - 2:.1f}" fill="#c0392b"/>')
        if math.isfinite(lo) and math.isfinite(hi):
            cy = yb + rh / 2
            out.append(f'<line x1="{X(lo):.1f}" x2="{X(hi):.1f}" y1="{cy:.1f}" y2="{cy:.1f}" stroke="#222"/>')
            for w in (lo, hi):
                if lo_d <= w <= hi_d:
                    out.append(f'<line x1="{X(w):.1f}" x2="{X(w):.1f}" y1="{cy - 4:.1f}" y2="{cy + 4:.1f}" stroke="#222"/>')
        out.append(f'<text class="value" x="{x1 + 10}" y="{yb + 13:.1f}">{esc(text)}</text></g>')
        y += h
    return "".join(out) + "</svg>"


def paginate(rows: Sequence[dict], max_lines: int = 36) -> list[list[dict]]:
    """``rows`` in consecutive pages of at most ``max_lines`` label lines each (at least one row a
    page), so that no bar chart grows taller than about ``max_lines * 18`` px."""
    pages: list[list[dict]] = [[]]
    used = 0
    for r in rows:
        n = bar_lines(str(r.get("label", ""))) + (1 if r.get("group") else 0)
        if pages[-1] and used + n > max_lines:
            pages.append([])
            used = 0
        pages[-1].append(r)
        used += n
    return pages if pages[0] else []


def graph_layout(graph: dict):
    """Nodes, edges (those between known nodes), columns of node names by stage (each column
    ordered to follow its parents) and each node's column: the layout both renderers draw."""
    nodes = list(graph.get("nodes", []))
    order = {n["name"]: i for i, n in enumerate(nodes)}
    edges = [e for e in graph.get("edges", []) if e.get("child") in order and e.get("parent") in order]
    stages = sorted({int(fnum(n.get("stage")) if math.isfinite(fnum(n.get("stage"))) else 0) for n in nodes})
    col_of = {n["name"]: stages.index(int(fnum(n.get("stage")) if math.isfinite(fnum(n.get("stage"))) else 0)) for n in nodes}
    parents: dict[str, list[str]] = {}
    for e in edges:
        parents.setdefault(e["child"], []).append(e["parent"])
    rank: dict[str, float] = {}
    columns: list[list[str]] = []
    for c in reversed(range(len(stages))):  # output side first; children follow their parents' order
        names = [n["name"] for n in nodes if col_of[n["name"]] == c]

        def key(name: str) -> tuple:
            ps = [rank[p] for p in parents.get(name, []) if p in rank]
            return (sum(ps) / len(ps) if ps else math.inf, order[name])

        names.sort(key=key)
        for i, name in enumerate(names):
            rank[name] = i / max(len(names), 1)
        columns.insert(0, names)
    return nodes, edges, columns, col_of


def dag(graph: dict, vmax: Optional[float] = None) -> str:
    """The hypothesis graph: one box per claim in stage columns, edges child -> parent labelled
    ``port`` (and ``@positions``), boxes coloured by ``contribution`` (grey when unknown)."""
    nodes, edges, columns, col_of = graph_layout(graph)
    if not nodes:
        return '<svg class="dag" width="10" height="10"></svg>'
    by_name = {n["name"]: n for n in nodes}
    vmax = vmax or scale_max(n.get("contribution") for n in nodes)
    nw = int(min(240, max(120, CHAR * max(len(str(n["name"])) for n in nodes) + 16)))
    gap, vgap, margin, lane = 120, 12, 16, 14
    ins: dict[str, list[dict]] = {}
    outs: dict[str, list[dict]] = {}
    for e in edges:
        ins.setdefault(e["parent"], []).append(e)
        outs.setdefault(e["child"], []).append(e)
    height_of = {n["name"]: max(40, lane * max(len(ins.get(n["name"], [])), len(outs.get(n["name"], []))) + 8) for n in nodes}
    col_h = [sum(height_of[m] for m in col) + vgap * (len(col) - 1) for col in columns]
    total_h = max(col_h) + 2 * margin
    width = margin * 2 + len(columns) * nw + (len(columns) - 1) * gap
    pos = {}
    for c, col in enumerate(columns):
        y = margin + (max(col_h) - col_h[c]) / 2
        for name in col:
            pos[name] = (margin + c * (nw + gap), y)
            y += height_of[name] + vgap
    out = [f'<svg class="dag" viewBox="0 0 {width} {total_h:.0f}" width="{width}" height="{total_h:.0f}" role="img" '
           f'style="{FONT};font-size:11px">']

    def anchor(name: str, e: dict, side: str) -> tuple[float, float]:
        x, y = pos[name]
        group = sorted(ins[name] if side == "in" else outs[name],
                       key=lambda f: pos[f["child" if side == "in" else "parent"]][1])
        k = next(i for i, f in enumerate(group) if f is e)
        h = height_of[name]
        return (x if side == "in" else x + nw), y + h / 2 + (k - (len(group) - 1) / 2) * lane

    labels = []
    for e in edges:
        (xa, ya), (xb, yb) = anchor(e["child"], e, "out"), anchor(e["parent"], e, "in")
        dx = max(30.0, (xb - xa) / 2)
        positions = e.get("positions")
        text = str(e.get("port", "")) + (f"@{','.join(map(str, positions))}" if positions else "")
        tip = f"{e['child']} -> {e['parent']} (port {text})"
        out.append(f'<g class="edge"><title>{esc(tip)}</title><path d="M{xa:.1f},{ya:.1f} C{xa + dx:.1f},{ya:.1f} '
                   f'{xb - dx:.1f},{yb:.1f} {xb - 6:.1f},{yb:.1f}" fill="none" stroke="#8a8a8a" stroke-width="1.3"/>'
                   f'<polygon points="{xb:.1f},{yb:.1f} {xb - 7:.1f},{yb - 3.5:.1f} {xb - 7:.1f},{yb + 3.5:.1f}" fill="#8a8a8a"/></g>')
        labels.append(f'<text class="port" x="{xb - 9:.1f}" y="{yb - 2.5:.1f}" text-anchor="end" font-size="10" '
                      f'paint-order="stroke" stroke="#fff" stroke-width="3">{esc(text)}</text>')
    for name, (x, y) in pos.items():
        n = by_name[name]
        c = n.get("contribution")
        is_root = str(n.get("component")) == "Output"
        fill = "#eef3e8" if is_root and math.isnan(fnum(c)) else diverging(c, vmax)
        sub = "model output" if is_root else f"{n.get('feature')} \u00b7 \u0394LR {fmt_pct(c)}"
        tip = (f"{name}\ncomponent: {n.get('component')}\nfeature: {n.get('feature')}\nstage: {n.get('stage')}\n"
               f"contribution (leave-one-out drop in LR): {fmt_pct(c, 2)}")
        h = height_of[name]
        ink = _ink(c, vmax)
        out.append(f'<g class="node"><title>{esc(tip)}</title><rect x="{x}" y="{y:.1f}" width="{nw}" height="{h}" rx="5" '
                   f'fill="{fill}" stroke="{"#2a6f3f" if is_root else "#555"}" stroke-width="{2 if is_root else 1}"/>'
                   f'<text x="{x + nw / 2}" y="{y + h / 2 - 3:.1f}" text-anchor="middle" fill="{ink}" font-weight="600">'
                   f'{esc(_clip(str(name), int((nw - 8) / CHAR)))}</text>'
                   f'<text x="{x + nw / 2}" y="{y + h / 2 + 11:.1f}" text-anchor="middle" fill="{ink}" font-size="10">'
                   f'{esc(_clip(sub, int((nw - 8) / 5.6)))}</text></g>')
    return "".join(out + labels) + "</svg>"


def heatmap(rows: Sequence[str], cols: Sequence[str], cells: dict, vmax: float, fmt: Callable = fmt_pct) -> str:
    """A matrix with a row per first claim ``a`` and a column per second claim ``b``; ``cells``
    maps ``(a, b)`` to ``(value, flagged, tip)``; flagged cells get a heavy outline and a mark."""
    rows, cols = list(rows), list(cols)
    if not rows or not cols:
        return '<svg class="heatmap" width="10" height="10"></svg>'
    cs = 46
    lw = int(min(260, CHAR * max(len(s) for s in rows) + 12))
    top = int(min(200, 0.72 * CHAR * max(len(s) for s in cols) + 20))
    width, height = lw + cs * len(cols) + top + 8, top + cs * len(rows) + 8
    out = [f'<svg class="heatmap" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'style="{FONT};font-size:11px">']
    for i, s in enumerate(rows):
        cy = top + i * cs + cs / 2 + 4
        out.append(f'<text x="{lw - 6}" y="{cy:.1f}" text-anchor="end">{esc(_clip(s, int(lw / CHAR)))}<title>{esc(s)}</title></text>')
    for j, s in enumerate(cols):
        cx = lw + j * cs + cs / 2
        out.append(f'<text transform="translate({cx:.1f},{top - 6}) rotate(-45)">{esc(_clip(s, 40))}<title>{esc(s)}</title></text>')
    for i, a in enumerate(rows):
        for j, b in enumerate(cols):
            x, y = lw + j * cs, top + i * cs
            if (a, b) not in cells:
                out.append(f'<rect x="{x}" y="{y}" width="{cs}" height="{cs}" fill="#fafafa" stroke="#eee"/>')
                continue
            v, flagged, tip = cells[(a, b)]
            cls = "cell flagged" if flagged else "cell"
            out.append(f'<g class="{cls}"><title>{esc(tip)}</title><rect x="{x}" y="{y}" width="{cs}" height="{cs}" '
                       f'fill="{diverging(v, vmax)}" stroke="{"#000" if flagged else "#ddd"}" stroke-width="{3 if flagged else 1}"/>'
                       f'<text x="{x + cs / 2}" y="{y + cs / 2 + 4}" text-anchor="middle" font-size="10" fill="{_ink(v, vmax)}">'
                       f'{esc(fmt(v))}</text>')
            if flagged:
                out.append(f'<text x="{x + cs - 4}" y="{y + 11}" text-anchor="end" font-weight="700" fill="{_ink(v, vmax)}">!</text>')
            out.append("</g>")
    return "".join(out) + "</svg>"
