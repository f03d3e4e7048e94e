"""HTML for a `SearchResult`: a summary, the size-vs-LR curve as inline SVG, and the decisions."""

from __future__ import annotations

import html
import math

__all__ = ["curve_svg", "body", "page"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "table{border-collapse:collapse;font-size:.9rem}td,th{padding:.15rem .6rem;border-bottom:1px solid #ddd;text-align:left}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}tr.kept td{background:#eef7ee}"
    "pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.8rem}"
)


def _e(x) -> str:
    return html.escape(str(x))


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1%}"


def curve_svg(points, width: int = 520, height: int = 300) -> str:
    """Edges (x) against loss recovered (y, with ±1 SE bars), one point per tau, labelled."""
    pts = [p for p in points if math.isfinite(p.loss_recovered)]
    if not pts:
        return "<p>(no finite loss recovered to draw)</p>"
    left, right, top, bottom = 56, 20, 16, 42
    xs = [p.edges for p in pts]
    x0, x1 = 0, max(max(xs), 1)
    ys = [p.loss_recovered for p in pts]
    spread = [p.stderr if math.isfinite(p.stderr) else 0.0 for p in pts]
    y0 = min(0.0, min(y - s for y, s in zip(ys, spread)))
    y1 = max(1.0, max(y + s for y, s in zip(ys, spread)))
    sx = lambda v: left + (v - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda v: top + (y1 - v) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="hypothesis size against loss recovered">']
    parts.append(f'<line x1="{left}" y1="{sy(y0):.1f}" x2="{width - right}" y2="{sy(y0):.1f}" stroke="#888"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#888"/>')
    for ref in (0.0, 1.0):
        parts.append(f'<line x1="{left}" y1="{sy(ref):.1f}" x2="{width - right}" y2="{sy(ref):.1f}" stroke="#ccc" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(ref) + 4:.1f}" font-size="11" text-anchor="end">{ref:.0%}</text>')
    parts.append(f'<text x="{left - 6}" y="{height - bottom + 14}" font-size="11" text-anchor="end">0</text>')
    parts.append(f'<text x="{width - right}" y="{height - bottom + 14}" font-size="11" text-anchor="end">{x1}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 8}" font-size="12" text-anchor="middle">edges</text>')
    parts.append(f'<text x="14" y="{(top + height - bottom) / 2:.0f}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(top + height - bottom) / 2:.0f})">loss recovered</text>')
    ordered = sorted(pts, key=lambda p: p.edges)
    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(p.edges):.1f},{sy(p.loss_recovered):.1f}" for i, p in enumerate(ordered))
    parts.append(f'<path d="{path}" fill="none" stroke="#4a7ab5" stroke-width="1.5"/>')
    for p, s in zip(pts, spread):
        x, y = sx(p.edges), sy(p.loss_recovered)
        parts.append(f'<line x1="{x:.1f}" y1="{sy(p.loss_recovered - s):.1f}" x2="{x:.1f}" y2="{sy(p.loss_recovered + s):.1f}" stroke="#4a7ab5"/>')
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#4a7ab5"><title>tau {p.tau:g}: {p.edges} edges, '
                     f'LR {_pct(p.loss_recovered)}</title></circle>')
        parts.append(f'<text x="{x + 5:.1f}" y="{y - 6:.1f}" font-size="10">τ={p.tau:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def body(res) -> str:
    r, s = res.result, res.start_result
    out = [f"<h1>Search from {_e(res.start.name)}</h1>"]
    out.append(
        f"<p>tau = {res.tau:g}; metric {_e(r.metric)}; {r.n_rows} rows; seeds {list(r.seeds)}.<br>"
        f"Start: {len(res.start.edges)} edges, LR {_pct(s.loss_recovered)} ± {_pct(s.stderr)}.<br>"
        f"<b>Found: {len(res.hypothesis.edges)} edges, {len(res.hypothesis.claims) - 1} claims, LR "
        f"{_pct(r.loss_recovered)} ± {_pct(r.stderr)}</b> (CI {_pct(r.ci[0])} .. {_pct(r.ci[1])}).<br>"
        f"{len(res.decisions)} changes tried in {res.calls} batched calls ({res.scored} hypotheses scored).</p>"
    )
    if res.curve:
        out.append("<h2>Size against loss recovered</h2>" + curve_svg(res.curve))
        rows = "".join(f'<tr><td class="num">{p.tau:g}</td><td class="num">{p.edges}</td><td class="num">{p.claims}</td>'
                       f'<td class="num">{_pct(p.loss_recovered)} ± {_pct(p.stderr)}</td></tr>' for p in res.curve)
        out.append(f"<table><tr><th>tau</th><th>edges</th><th>claims</th><th>LR ± SE</th></tr>{rows}</table>")
    out.append("<h2>Found hypothesis</h2><pre>" + _e(str(res.hypothesis)) + "</pre>")
    out.append("<h2>Decisions</h2><table><tr><th>claim</th><th>change</th><th>LR before</th><th>LR after</th><th>kept</th><th>why</th></tr>")
    for step in res.steps:
        for d in step.decisions:
            out.append(f'<tr class="{"kept" if d.kept else ""}"><td>{_e(step.claim)}</td><td>{_e(d.change)}</td>'
                       f'<td class="num">{_pct(d.lr_before)}</td><td class="num">{_pct(d.lr_after)}</td>'
                       f'<td>{"yes" if d.kept else "no"}</td><td>{_e(d.reason)}</td></tr>')
    out.append("</table><h2>As Python</h2><pre>" + _e(res.to_python()) + "</pre>")
    return "\n".join(out)


def page(res) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Search: {_e(res.start.name)}</title>'
            f"<style>{_STYLE}</style></head><body>{body(res)}</body></html>\n")
