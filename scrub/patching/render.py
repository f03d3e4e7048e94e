"""A `PatchingResult` as a terminal table and as a self-contained HTML page with SVG heatmaps.

Heatmaps (matplotlib, Agg backend, SVG inlined): per kind of site, layer x head when every
position was patched at once, and (layer[.head]) x position when positions were patched one by
one. Colours are centred on 0 (denoise) or 1 (noise: the "nothing happened" value).
"""

from __future__ import annotations

import html as _html
import io
import math
from collections import defaultdict
from typing import Any, Optional

import torch

# the result's type is `scrub.patching.result.PatchingResult`, which imports this module lazily
PatchingResult = Any

__all__ = ["table", "html", "heatmaps"]

_KIND_TITLES = {
    "head": "head outputs", "q": "head query inputs", "k": "head key inputs", "v": "head value inputs",
    "mlp": "MLP outputs", "resid": "residual stream (layer input)",
}


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:+.3f}"


def table(result: PatchingResult, limit: int = 30) -> str:
    """The header and the ``limit`` most important cells, one per line."""
    lines = [
        f"{result.method} patching ({result.direction}), metric {result.metric}, {result.n_rows} rows, "
        f"corrupted: {result.corrupted_by}" + (f", into {result.receiver}" if result.receiver else ""),
        f"clean {result.clean:.4f}  corrupted {result.corrupt:.4f}  "
        f"effect = (patched - corrupted) / (clean - corrupted)",
        f"{'cell':<22}{'effect':>10}{'se':>9}{'patched':>11}",
    ]
    ranked = result.ranked()
    for site, effect, se in ranked[:limit]:
        i = result.sites.index(site)
        lines.append(f"{str(site):<22}{_fmt(effect):>10}{se:>9.3f}{float(result.patched[i]):>11.4f}")
    if len(ranked) > limit:
        lines.append(f"... {len(ranked) - limit} more cells (to_dict() has all)")
    if result.agreement is not None:
        ag = result.agreement
        recall = ", ".join(f"top-{k}: {v['recall']:.2f}" for k, v in ag["recall"].items())
        lines.append(f"agreement with exact patching: pearson {ag['pearson']:.3f}, spearman {ag['spearman']:.3f}; recall {recall}")
    return "\n".join(lines)


def _matrices(result: PatchingResult) -> list[tuple[str, list[str], list[str], torch.Tensor]]:
    """``(title, row labels, column labels, values)`` for each heatmap."""
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(result.sites):
        by_kind[s.kind].append(i)
    out = []
    for kind, idx in by_kind.items():
        sites = [result.sites[i] for i in idx]
        per_position = any(s.position is not None for s in sites)
        if per_position:
            rows = sorted({s.label(False) for s in sites}, key=lambda r: [s.label(False) for s in sites].index(r))
            cols = sorted({s.position for s in sites if s.position is not None})
            m = torch.full((len(rows), len(cols)), float("nan"))
            for i in idx:
                s = result.sites[i]
                if s.position is not None:
                    m[rows.index(s.label(False)), cols.index(s.position)] = float(result.effect[i])
            out.append((f"{_KIND_TITLES[kind]}: component x position", rows, [str(c) for c in cols], m))
        elif kind in ("head", "q", "k", "v"):
            m = torch.full((result.n_layers, result.n_heads), float("nan"))
            for i in idx:
                m[result.sites[i].layer, result.sites[i].head] = float(result.effect[i])
            out.append((f"{_KIND_TITLES[kind]}: layer x head", [str(l) for l in range(result.n_layers)],
                        [str(h) for h in range(result.n_heads)], m))
        else:
            m = torch.full((result.n_layers, 1), float("nan"))
            for i in idx:
                m[result.sites[i].layer, 0] = float(result.effect[i])
            out.append((f"{_KIND_TITLES[kind]}: layer", [str(l) for l in range(result.n_layers)], ["all"], m))
    return out


def _svg(title: str, rows: list[str], cols: list[str], values: torch.Tensor, centre: float) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    finite = values[~torch.isnan(values)]
    span = float((finite - centre).abs().max()) if len(finite) else 1.0
    span = span if span > 0 else 1.0
    fig, ax = plt.subplots(figsize=(1.2 + 0.35 * max(len(cols), 4), 1.0 + 0.3 * max(len(rows), 3)))
    im = ax.imshow(values.numpy(), cmap="RdBu", vmin=centre - span, vmax=centre + span, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def heatmaps(result: PatchingResult) -> list[str]:
    """One inline SVG string per heatmap."""
    centre = 0.0 if result.direction == "denoise" else 1.0
    return [_svg(*m, centre=centre) for m in _matrices(result)]


def html(result: PatchingResult, title: Optional[str] = None) -> str:
    title = title or f"{result.method} patching ({result.direction}), {result.metric}"
    esc = _html.escape
    rows = "".join(
        f"<tr><td>{esc(str(s))}</td><td>{_fmt(e)}</td><td>{se:.3f}</td></tr>" for s, e, se in result.ranked()
    )
    meaning = (
        "Denoising: the clean value of one activation put into the corrupted run; 1 = that activation "
        "alone restores clean behaviour (sufficient)."
        if result.direction == "denoise"
        else "Noising: the corrupted value of one activation put into the clean run; 0 = the model falls "
        "to the corrupted score without it (necessary), 1 = no change."
    )
    figures = "".join(f"<figure>{svg}</figure>" for svg in heatmaps(result))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>{esc(title)}</h1><p>{esc(meaning)} Effect = (patched - corrupted) / (clean - corrupted); "
        f"clean {result.clean:.4f}, corrupted {result.corrupt:.4f}, {result.n_rows} rows, "
        f"corrupted rows: {esc(result.corrupted_by)}"
        + (f", receiver {esc(result.receiver)}" if result.receiver else "")
        + f".</p>{figures}<table><tr><th>cell</th><th>effect</th><th>se</th></tr>{rows}</table></body></html>"
    )
