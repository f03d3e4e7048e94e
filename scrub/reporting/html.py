"""Self-contained HTML reports: one file, inline CSS and inline SVG figures, no scripts.

`render_report` draws one `Report.to_dict()`, `render_comparison` one `Comparison.to_dict()` and
`render_run` several reports (and optionally a comparison) on one page; `report_html`,
`comparison_html` and `result_html` give the same sections as fragments for notebook cells
(``_repr_html_``). Each takes the plain dicts (as written to JSON, so NaN may arrive as ``None``),
and every piece of text is escaped. The CSS is scoped to ``.scrub`` so a fragment does not
restyle the notebook around it.

A report page holds: the headline result and findings; loss-recovered bars with CI whiskers for
the full hypothesis and every subgraph (one chart per kind, each led by the full hypothesis and
split into parts of bounded height when long; 0% and 100% reference lines, the axis
extended for values outside [0, 1] and overflow marked beyond [-100%, 200%]); the hypothesis
graph coloured by contribution; the redundancy matrices (joint-removal interaction and
compensation rise, flagged pairs outlined); and tables for every number, including the
reproducibility record (versions, seeds, fingerprints).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

from scrub.reporting.svg import (
    bars,
    dag,
    esc,
    fmt_num,
    fmt_pct,
    fnum,
    heatmap,
    legend,
    paginate,
    scale_max,
)

__all__ = ["render_report", "render_comparison", "render_run", "report_html", "comparison_html", "result_html"]

CSS = """
.scrub{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;line-height:1.4}
body>.scrub{margin:24px auto;max-width:1180px;padding:0 16px}
.scrub h1{font-size:1.6em;margin-bottom:.2em}.scrub h2{border-bottom:2px solid #3b6ea8;padding-bottom:4px;margin-top:2em}
.scrub h3{margin-top:1.6em;color:#333}.scrub h4{margin:1.2em 0 .3em}
.scrub section.report,.scrub section.comparison{margin-bottom:3em}
.scrub .headline{font-size:1.08em;background:#f3f6fa;border-left:4px solid #3b6ea8;padding:8px 12px}
.scrub .findings li{margin:.3em 0}.scrub .findings{background:#fff8e6;border-left:4px solid #e0a800;padding:8px 8px 8px 28px}
.scrub figure{margin:12px 0;overflow-x:auto}.scrub svg.bars,.scrub svg.dag{max-width:none;height:auto}
.scrub figcaption{color:#555;font-size:.9em;max-width:900px}
.scrub table{border-collapse:collapse;margin:10px 0 18px;font-size:.86em}.scrub caption{text-align:left;font-weight:600;padding:4px 0}
.scrub th,.scrub td{border:1px solid #ddd;padding:3px 8px;vertical-align:top}.scrub th{background:#f1f1f1;text-align:left}
.scrub td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.scrub tr.flag td{background:#fdecea}
.scrub nav ul{columns:2}.scrub .muted{color:#777}.scrub .pair{display:inline-block;vertical-align:top;margin-right:28px}
.scrub .note{color:#444;font-size:.9em;margin:.2em 0 .8em}
"""

KINDS = {"leave-one-out": "leave-one-out (claim removed)", "alone": "each claim alone", "path": "root-to-leaf paths",
         "named": "named subgraphs"}

# What a subgraph's bar and its "full \u2212 subgraph" number mean, by kind.
KIND_NOTES = {
    "leave-one-out": "Each bar: the hypothesis with one claim removed (its output resampled from random rows). "
                     "Full \u2212 subgraph is the claim's contribution: the drop in loss recovered when it is removed.",
    "alone": "Each bar: one claim kept with only what it needs (its inputs and its link to the output), every "
             "other claim removed. Full \u2212 subgraph is what the rest of the hypothesis adds to it; it is not "
             "a leave-one-out drop.",
    "path": "Each bar: one root-to-leaf path kept, everything else removed. Full \u2212 subgraph is what the "
            "other paths add; it is not a leave-one-out drop.",
    "named": "Each bar: a subgraph named by the user, the rest removed. Full \u2212 subgraph is what the rest adds.",
}
CONTRIBUTION = ("contribution = LR(full) \u2212 LR(subgraph), paired: on leave-one-out rows the drop when the claim is "
                "removed; on alone, path and named rows what the rest of the hypothesis adds to that subgraph")
BARS_NOTE = ("One chart per kind of subgraph, each led by the full hypothesis, all on one axis. Bars: loss recovered; "
             "whiskers: confidence intervals; dashed lines at 0% (the baseline) and 100% (the model); the dotted line "
             "marks the full hypothesis. A value beyond the axis is drawn to the edge with a red triangle, and the "
             "number beside each bar is always the true one.")
MAX_BAR_LINES = 36  # label lines per bar chart: a chart stays under ~750 px tall; longer lists continue in the next


def _page(title: str, body: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
            f'<body><div class="scrub">\n{body}\n<p class="muted">Generated by scrub (causal scrubbing). All figures '
            f"are inline SVG; hover over a bar, node or cell for its numbers.</p></div></body></html>\n")


def fragment(body: str) -> str:
    """A piece of a page for a notebook cell: the report's own CSS, scoped to ``.scrub``; no scripts."""
    return f'<div class="scrub"><style>{CSS}</style>{body}</div>'


def _est(e: Optional[dict], fmt=fmt_pct) -> str:
    if not e:
        return ""
    lo, hi = (list(e.get("ci") or []) + [None, None])[:2]
    return f"{fmt(e.get('value'))} [{fmt(lo)}, {fmt(hi)}]"


def _ci(r: dict, fmt=fmt_pct) -> str:
    lo, hi = (list(r.get("ci") or []) + [None, None])[:2]
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _numeric(s: str) -> bool:
    return bool(s) and (s[0].isdigit() or s[0] in "-+[" or s in ("n/a", "+inf", "-inf"))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "", cls: str = "",
           flags: Optional[Sequence[bool]] = None) -> str:
    rows = [list(map(lambda c: "" if c is None else str(c), r)) for r in rows]
    out = [f'<table class="{esc(cls)}">' + (f"<caption>{esc(caption)}</caption>" if caption else "")]
    out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead><tbody>")
    if not rows:
        out.append(f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>')
    for i, r in enumerate(rows):
        flag = ' class="flag"' if flags and flags[i] else ""
        out.append(f"<tr{flag}>" + "".join(f'<td{" class=n" if j and _numeric(c) else ""}>{esc(c)}</td>'
                                           for j, c in enumerate(r)) + "</tr>")
    return "".join(out) + "</tbody></table>"


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(d, dict):
        out = []
        for k, v in d.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out or [(prefix, "")]
    if isinstance(d, (list, tuple)):
        return [(prefix, ", ".join(_flatten(v)[0][1] if not isinstance(v, (dict, list, tuple)) else repr(v) for v in d))]
    if isinstance(d, float):
        return [(prefix, repr(d))]
    return [(prefix, "" if d is None else str(d))]


def _level(r: dict) -> int:
    v = fnum(r.get("ci_level"))
    return int(round(100 * v)) if math.isfinite(v) else 95


def _result_table(r: dict, caption: str) -> str:
    """Every field of a `Result.to_dict()`: the known ones readably, the rest as they are."""
    unit = r.get("metric", "metric")
    rows = [
        ["loss recovered", fmt_pct(r.get("loss_recovered"), 2)],
        ["standard error", fmt_pct(r.get("stderr"), 2)],
        [f"{_level(r)}% CI (bootstrap)", _ci(r, lambda x: fmt_pct(x, 2))],
        [f"M_model ({unit})", f"{fmt_num(r.get('m_model'), 4)} \u00b1 {fmt_num(r.get('m_model_se'), 4)}"],
        [f"M_base ({unit}; baseline {r.get('baseline')})", f"{fmt_num(r.get('m_base'), 4)} \u00b1 {fmt_num(r.get('m_base_se'), 4)}"],
        [f"M_scrub ({unit})", f"{fmt_num(r.get('m_scrub'), 4)} \u00b1 {fmt_num(r.get('m_scrub_se'), 4)}"],
        ["lower is better", {True: "yes", False: "no"}.get(r.get("lower_is_better"), r.get("lower_is_better"))],
        ["reference rows", r.get("n_rows")],
        ["seeds", ", ".join(map(str, r.get("seeds") or []))],
        ["loss recovered per seed", ", ".join(fmt_pct(x, 2) for x in r.get("lr_per_seed") or [])],
        ["standard error between seeds", fmt_pct(r.get("stderr_seeds"), 2)],
        ["dataset", r.get("dataset")], ["engine", r.get("engine")],
    ]
    for feat, sizes in (r.get("class_sizes") or {}).items():
        rows.append([f"equivalence classes of {feat!r} (min / median / max rows)", " / ".join(map(str, sizes))])
    for w in r.get("warnings") or []:
        rows.append(["warning", w])
    shown = {"loss_recovered", "stderr", "ci", "ci_level", "m_model", "m_base", "m_scrub", "m_model_se", "m_base_se",
             "m_scrub_se", "lower_is_better", "n_rows", "seeds", "lr_per_seed", "stderr_seeds", "dataset", "engine",
             "class_sizes", "warnings", "hypothesis", "metric", "baseline"}
    extra = {k: v for k, v in r.items() if k not in shown}
    rows += [[k, v] for k, v in _flatten(extra)] if extra else []
    return _table(["quantity", "value"], rows, caption, "result")


def _headline(r: dict) -> str:
    return (f'<p class="headline">Loss recovered <b>{esc(fmt_pct(r.get("loss_recovered")))}</b> \u00b1 '
            f'{esc(fmt_pct(r.get("stderr"), 2))} (SE), {_level(r)}% CI '
            f'{esc(_ci(r))}. {esc(r.get("metric"))}: model {esc(fmt_num(r.get("m_model")))}, scrubbed '
            f'{esc(fmt_num(r.get("m_scrub")))}, baseline ({esc(r.get("baseline"))}) {esc(fmt_num(r.get("m_base")))}; '
            f'{esc(r.get("n_rows"))} reference rows of {esc(repr(r.get("dataset")))}, seeds '
            f'{esc(list(r.get("seeds") or []))}, engine {esc(r.get("engine"))}.</p>')


def _figure(svg: str, caption: str, cls: str) -> str:
    return f'<figure class="{cls}">{svg}<figcaption>{esc(caption)}</figcaption></figure>'


def _bar_row(label: str, r: dict, group: str = "", strong: bool = False) -> dict:
    lo, hi = (list(r.get("ci") or []) + [None, None])[:2]
    return {"label": label, "value": r.get("loss_recovered"), "lo": lo, "hi": hi, "group": group, "strong": strong}


def _bar_figures(rows: Sequence[dict], caption: str, cls: str, **options) -> str:
    """``rows`` as one bar chart, or as several of bounded height when there are many."""
    pages = paginate(rows, MAX_BAR_LINES)
    parts = [f" (part {i + 1} of {len(pages)})" if len(pages) > 1 else "" for i in range(len(pages))]
    return "".join(_figure(bars(page, layout_rows=rows, **options), caption + part, cls) for page, part in zip(pages, parts))


def _subgraph_bars(name: str, full: dict, subs: Sequence[dict]) -> str:
    """One chart per kind of subgraph (leave-one-out, alone, paths, named), each led by the full
    hypothesis for reference and split into parts of bounded height when it has many rows."""
    full_row = _bar_row(f"full: {name}", full, strong=True)
    marker = (fnum(full.get("loss_recovered")), "full")
    kinds = list(dict.fromkeys([s.get("kind") for s in subs]))
    if not kinds:
        return _figure(bars([full_row], marker=marker), "Loss recovered by the full hypothesis (no subgraphs were "
                       "scrubbed); the whisker is its confidence interval.", "lr-bars")
    by_kind = {k: [_bar_row(s.get("name", ""), s.get("result") or {}) for s in subs if s.get("kind") == k] for k in kinds}
    every = [full_row] + [r for rows in by_kind.values() for r in rows]
    shared = {"marker": marker, "layout_rows": every}
    out = [f'<p class="note">{esc(BARS_NOTE)}</p>']
    for k, rows in by_kind.items():
        pages = paginate(rows, MAX_BAR_LINES - 1)
        for i, page in enumerate(pages):
            part = f" (part {i + 1} of {len(pages)})" if len(pages) > 1 else ""
            out.append(f"<h4>{esc(KINDS.get(k, str(k)))}{esc(part)}</h4>")
            out.append(_figure(bars([full_row] + page, **shared), KIND_NOTES.get(k, ""), "lr-bars"))
    return "".join(out)


def _redundancy(d: dict, claim_order: Sequence[str]) -> str:
    red = d.get("redundancy") or {}
    joint, comp = red.get("joint") or [], red.get("compensation") or []
    if not joint and not comp:
        return '<p class="muted">No redundancy pairs were checked (no candidate pairs, or pairs=None).</p>'
    def ordered(names: set) -> list:
        return [c for c in claim_order if c in names] + sorted(names - set(claim_order), key=str)

    rows = ordered({p.get("a") for p in joint + comp})
    cols = ordered({p.get("b") for p in joint + comp})
    metric = (d.get("full") or {}).get("metric", "metric")
    parts = []
    if joint:
        cells = {(j["a"], j["b"]): ((j.get("interaction") or {}).get("value"), bool(j.get("flagged")),
                                    f"{j['a']} + {j['b']}: interaction {_est(j.get('interaction'))}; "
                                    f"drop(a) {_est(j.get('drop_a'))}, drop(b) {_est(j.get('drop_b'))}, "
                                    f"drop(a,b) {_est(j.get('drop_ab'))}; {j.get('verdict')}") for j in joint}
        vmax = scale_max(v for v, _, _ in cells.values())
        parts.append(f'<div class="pair"><h4>Joint removal: interaction = drop(a,b) \u2212 drop(a) \u2212 drop(b)</h4>'
                     f'{heatmap(rows, cols, cells, vmax)}{legend(vmax, label="interaction (LR)", unknown=False)}</div>')
    if comp:
        cells = {(c["a"], c["b"]): ((c.get("rise") or {}).get("value"), bool(c.get("flagged")),
                                    f"knock out {c['a']}: direct effect of {c['b']} {_est(c.get('direct_b'), fmt_num)} -> "
                                    f"{_est(c.get('direct_b_after_knockout'), fmt_num)}; rise {_est(c.get('rise'), fmt_num)}")
                 for c in comp}
        vmax = scale_max(v for v, _, _ in cells.values())
        parts.append(f'<div class="pair"><h4>Compensation: rise of b\'s direct effect with a knocked out ({esc(metric)})</h4>'
                     f'{heatmap(rows, cols, cells, vmax, fmt_num)}{legend(vmax, fmt_num, "rise (" + metric + ")", False)}</div>')
    return (f'<figure class="redundancy">{"".join(parts)}<figcaption>Rows: the first claim a of each pair; columns: the second claim b (downstream). Positive '
            f'interaction: removing both claims lowers loss recovered by more than the two single removals added '
            f'together (super-additive); negative: by less (sub-additive). The sign alone is not a verdict: '
            f'each pair\'s verdict (hover over a cell, or see the table) says what its drops show. Compensation: '
            f'positive means b\'s direct effect grows when a is knocked out. Outlined cells marked "!" are flagged '
            f'(interval excludes zero and the effect exceeds the threshold).</figcaption></figure>')


def _report_section(d: dict, anchor: str = "report") -> str:
    full = d.get("full") or {}
    name = d.get("hypothesis", full.get("hypothesis", "hypothesis"))
    graph = d.get("graph") or {"nodes": [], "edges": []}
    subs = d.get("subgraphs") or []
    red = d.get("redundancy") or {}
    out = [f'<section class="report" id="{esc(anchor)}"><h2>Report: {esc(name)}</h2>', _headline(full)]
    if d.get("findings"):
        out.append('<h3>Findings</h3><ul class="findings">' + "".join(f"<li>{esc(f)}</li>" for f in d["findings"]) + "</ul>")
    out.append("<h3>Loss recovered: the full hypothesis and its subgraphs</h3>")
    out.append(_subgraph_bars(name, full, subs))
    out.append("<h3>Hypothesis graph</h3>")
    cvals = [n.get("contribution") for n in graph.get("nodes", [])]
    vmax = scale_max(cvals)
    out.append(_figure(dag(graph, vmax) + legend(vmax, label="contribution: leave-one-out drop in loss recovered"),
                       "Claims in residual-stream order (left: embeddings, right: the output); each edge is labelled "
                       "with the port of the parent it feeds (and positions, when restricted). Red: removing the claim "
                       "lowers loss recovered; blue: removing it raises it; grey: unknown.", "graph"))
    out.append("<h3>Serial redundancy</h3>")
    out.append(_redundancy(d, [n.get("name") for n in graph.get("nodes", [])]))
    if d.get("subpopulations"):
        from scrub.reporting.subpopulations import section_html

        out.append(section_html(d["subpopulations"]))
    if d.get("generality"):
        grow = [_bar_row(g.get("dataset", ""), g.get("result") or {}) for g in d["generality"]]
        out.append("<h3>Generality</h3>" + _bar_figures(grow, "Loss recovered by the same hypothesis on each dataset.", "gen-bars"))
    out.append("<h3>Tables</h3>")
    out.append(_result_table(full, "Full hypothesis"))
    out.append(_table(
        ["kind", "subgraph", "claims", "LR", "SE", "CI", "M_scrub", "full \u2212 subgraph [CI]", "full \u2212 subgraph SE"],
        [[s.get("kind"), s.get("name"), ", ".join(s.get("claims") or []), fmt_pct((s.get("result") or {}).get("loss_recovered")),
          fmt_pct((s.get("result") or {}).get("stderr"), 2), _ci(s.get("result") or {}),
          fmt_num((s.get("result") or {}).get("m_scrub"), 4), _est(s.get("contribution")),
          fmt_pct((s.get("contribution") or {}).get("stderr"), 2)] for s in subs],
        f"Subgraphs ({CONTRIBUTION})", "subgraphs"))
    joint = red.get("joint") or []
    out.append(_table(
        ["a", "b", "drop(a)", "drop(b)", "drop(a,b)", "interaction [CI]", "interaction SE", "verdict", "flagged"],
        [[j.get("a"), j.get("b"), _est(j.get("drop_a")), _est(j.get("drop_b")), _est(j.get("drop_ab")),
          _est(j.get("interaction")), fmt_pct((j.get("interaction") or {}).get("stderr"), 2), j.get("verdict"),
          "yes" if j.get("flagged") else "no"] for j in joint],
        "Joint versus individual removal (drops in loss recovered)", "joint", [bool(j.get("flagged")) for j in joint]))
    comp = red.get("compensation") or []
    out.append(_table(
        ["knock out a", "b", "direct effect of b", "after knock-out", "rise [CI]", "rise SE", "flagged"],
        [[c.get("a"), c.get("b"), _est(c.get("direct_b"), fmt_num), _est(c.get("direct_b_after_knockout"), fmt_num),
          _est(c.get("rise"), fmt_num), fmt_num((c.get("rise") or {}).get("stderr"), 4),
          "yes: b's direct effect rises" if c.get("flagged") else "no"] for c in comp],
        f"Compensation: direct effect of b ({full.get('metric', 'metric')}, harm) with and without a knocked out",
        "compensation", [bool(c.get("flagged")) for c in comp]))
    gen = d.get("generality") or []
    out.append(_table(
        ["dataset", "data", "LR", "SE", "CI", "M_model", "M_scrub", "M_base", "rows"],
        [[g.get("dataset"), (g.get("result") or {}).get("dataset"), fmt_pct((g.get("result") or {}).get("loss_recovered")),
          fmt_pct((g.get("result") or {}).get("stderr"), 2), _ci(g.get("result") or {}),
          *(fmt_num((g.get("result") or {}).get(k), 4) for k in ("m_model", "m_scrub", "m_base")),
          (g.get("result") or {}).get("n_rows")] for g in gen], "Generality", "generality"))
    out.append(_table(["claim", "component", "feature", "stage", "contribution (leave-one-out drop)"],
                      [[n.get("name"), n.get("component"), n.get("feature"), n.get("stage"), fmt_pct(n.get("contribution"), 2)]
                       for n in graph.get("nodes", [])], "Claims (graph nodes)", "claims"))
    out.append(_table(["child", "parent", "port", "positions"],
                      [[e.get("child"), e.get("parent"), e.get("port"),
                        "all" if e.get("positions") is None else ", ".join(map(str, e["positions"]))]
                       for e in graph.get("edges", [])], "Edges", "edges"))
    out.append(_table(["findings"], [[f] for f in d.get("findings") or []] or [["none"]], "Findings", "findings-table"))
    out.append(_table(["key", "value"], _flatten(d.get("meta") or {}), "Reproducibility: versions, seeds, fingerprints", "meta"))
    return "".join(out) + "</section>"


def _comparison_section(d: dict, anchor: str = "comparison", title: str = "Comparison") -> str:
    results = d.get("results") or []
    diffs = d.get("differences") or []
    first = results[0] if results else {}
    out = [f'<section class="comparison" id="{esc(anchor)}"><h2>{esc(title)}</h2>',
           f'<p class="headline">{len(results)} hypotheses on the same {esc(first.get("n_rows"))} reference rows of '
           f'{esc(repr(first.get("dataset")))} with seeds {esc(list(first.get("seeds") or []))} (common random numbers); '
           f'{esc(first.get("metric"))}: model {esc(fmt_num(first.get("m_model")))}, baseline '
           f'({esc(first.get("baseline"))}) {esc(fmt_num(first.get("m_base")))}.</p>']
    out.append(_bar_figures([_bar_row(r.get("hypothesis", ""), r, strong=True) for r in results],
                            "Loss recovered with confidence intervals.", "cmp-bars"))
    if diffs:
        drows = [{"label": f"{x.get('a')} \u2212 {x.get('b')}", "value": (x.get("difference") or {}).get("value"),
                  "lo": ((x.get("difference") or {}).get("ci") or [None])[0],
                  "hi": ((x.get("difference") or {}).get("ci") or [None, None])[-1]} for x in diffs]
        out.append(_bar_figures(drows, "Paired differences in loss recovered (same rows and seeds); an order is stated "
                                "only when the interval excludes 0.", "diff-bars", refs=((0.0, "0"),), limits=(-2.0, 2.0)))
    out.append(_table(
        ["hypothesis", "LR", "SE", "CI", "M_scrub", "M_scrub SE", "M_model", "M_base", "rows", "seeds", "warnings"],
        [[r.get("hypothesis"), fmt_pct(r.get("loss_recovered")), fmt_pct(r.get("stderr"), 2), _ci(r),
          fmt_num(r.get("m_scrub"), 4), fmt_num(r.get("m_scrub_se"), 4), fmt_num(r.get("m_model"), 4),
          fmt_num(r.get("m_base"), 4), r.get("n_rows"), ", ".join(map(str, r.get("seeds") or [])),
          "; ".join(r.get("warnings") or [])] for r in results], "Results", "results"))
    if diffs:
        out.append(_table(["a", "b", "LR(a) \u2212 LR(b) [CI]", "SE", "verdict"],
                          [[x.get("a"), x.get("b"), _est(x.get("difference")), fmt_pct((x.get("difference") or {}).get("stderr"), 2),
                            x.get("verdict")] for x in diffs], "Paired differences", "differences"))
    out.append(_table(["key", "value"], _flatten(d.get("meta") or {}), "Reproducibility: versions, seeds, fingerprints", "meta"))
    return "".join(out) + "</section>"


def render_report(data: dict) -> str:
    """One `Report.to_dict()` as a self-contained HTML page."""
    name = data.get("hypothesis", "hypothesis")
    return _page(f"scrub report: {name}", f"<h1>scrub report: {esc(name)}</h1>" + _report_section(data))


def render_comparison(data: dict, title: str = "Comparison") -> str:
    """One `Comparison.to_dict()` as a self-contained HTML page."""
    names = ", ".join(str(r.get("hypothesis")) for r in data.get("results") or [])
    return _page(f"scrub {title.lower()}: {names}", f"<h1>scrub {esc(title.lower())}</h1>" + _comparison_section(data, title=title))


def render_run(reports: list[dict], comparison: Optional[dict] = None, title: str = "scrub run") -> str:
    """Several reports (and optionally a comparison) on one page, with a summary table on top."""
    body = [f"<h1>{esc(title)}</h1>"]
    if reports:
        rows, links = [], []
        for i, d in enumerate(reports):
            f = d.get("full") or {}
            n_flag = sum(bool(x.get("flagged")) for x in ((d.get("redundancy") or {}).get("joint") or [])
                         + ((d.get("redundancy") or {}).get("compensation") or []))
            rows.append([d.get("hypothesis"), fmt_pct(f.get("loss_recovered")), fmt_pct(f.get("stderr"), 2), _ci(f),
                         f.get("metric"), fmt_num(f.get("m_scrub"), 4), len(d.get("subgraphs") or []), n_flag])
            links.append(f'<li><a href="#report-{i}">{esc(d.get("hypothesis"))}</a></li>')
        body.append(_table(["hypothesis", "LR", "SE", "CI", "metric", "M_scrub", "subgraphs", "flagged pairs"], rows,
                           "Summary", "summary"))
        body.append("<nav><ul>" + "".join(links) + ('<li><a href="#comparison">comparison</a></li>' if comparison else "")
                    + "</ul></nav>")
    body += [_report_section(d, f"report-{i}") for i, d in enumerate(reports)]
    if comparison:
        body.append(_comparison_section(comparison, "comparison", comparison.get("title", "Comparison")))
    return _page(title, "".join(body))


def report_html(data: dict) -> str:
    """One `Report.to_dict()` as an HTML fragment for a notebook: the report page's section."""
    return fragment(_report_section(data))


def comparison_html(data: dict, title: str = "Comparison") -> str:
    """One `Comparison.to_dict()` as an HTML fragment for a notebook: the comparison page's section."""
    return fragment(_comparison_section(data, title=title))


def result_html(data: dict) -> str:
    """One `Result.to_dict()` as an HTML fragment: the headline, its bar and every number."""
    name = data.get("hypothesis", "hypothesis")
    bar = bars([_bar_row(str(name), data, strong=True)])
    return fragment(f'<section class="result"><h3>{esc(name)}</h3>{_headline(data)}'
                    f'{_figure(bar, "Loss recovered; the whisker is the confidence interval.", "lr-bars")}'
                    f'{_result_table(data, "Result")}</section>')
