"""`SearchResult`: what a search found, every decision it made, and the size-vs-LR curve.

Printable (a terminal summary), `to_json` (a dict, or a file), `to_html` (a self-contained page
with the curve drawn as SVG) and `to_python` (source code that rebuilds the found hypothesis).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Union

import attrs

from scrub.hypothesis import Hypothesis
from scrub.reporting.files import write_json, write_text
from scrub.result import Result
from scrub.search.code import to_python

__all__ = ["Decision", "Step", "CurvePoint", "SearchResult"]


@attrs.frozen
class Decision:
    """One change tried: its loss recovered before and after, and whether it was kept."""

    change: str
    lr_before: float
    lr_after: float
    kept: bool
    reason: str

    @property
    def drop(self) -> float:
        return self.lr_before - self.lr_after


@attrs.frozen
class Step:
    """The decisions made at one claim (claims are visited from the output backwards)."""

    claim: str
    decisions: tuple[Decision, ...]


@attrs.frozen
class CurvePoint:
    """The hypothesis a search with threshold ``tau`` found: its size and loss recovered."""

    tau: float
    edges: int
    claims: int
    loss_recovered: float
    stderr: float
    hypothesis: Optional[Hypothesis] = attrs.field(default=None, eq=False, repr=False)


def _num(x: float) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else float(x)


@attrs.frozen(eq=False)
class SearchResult:
    """The outcome of `scrub.search`.

    Attributes:
        hypothesis: the found hypothesis (a new one; the start is unchanged).
        result: its `scrub.Result` (loss recovered with SE and CI, on the search's rows and seeds).
        start: the start hypothesis and ``start_result`` its result.
        tau: the threshold the found hypothesis was searched with.
        steps: the decisions, one `Step` per visited claim, in visiting order.
        curve: one `CurvePoint` per tau searched (``taus``), sorted by tau.
        calls, scored: batched engine calls made (one per seed each) and hypotheses scored.
    """

    hypothesis: Hypothesis
    result: Result
    start: Hypothesis
    start_result: Result
    tau: float
    steps: tuple[Step, ...]
    curve: tuple[CurvePoint, ...]
    calls: int
    scored: int
    features: tuple[str, ...] = ()

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return tuple(d for s in self.steps for d in s.decisions)

    @property
    def loss_recovered(self) -> float:
        return self.result.loss_recovered

    @property
    def stderr(self) -> float:
        return self.result.stderr

    def __str__(self) -> str:
        r, s = self.result, self.start_result
        kept = sum(d.kept for d in self.decisions)
        lines = [
            f"Search from {self.start.name!r} (tau={self.tau:g}, metric {r.metric}, {r.n_rows} rows, seeds {list(r.seeds)})",
            f"  start: {len(self.start.edges)} edges, {len(self.start.claims) - 1} claims, LR {s.loss_recovered:.1%} ± {s.stderr:.1%}",
            f"  found: {len(self.hypothesis.edges)} edges, {len(self.hypothesis.claims) - 1} claims, "
            f"LR {r.loss_recovered:.1%} ± {r.stderr:.1%} (CI {r.ci[0]:.1%} .. {r.ci[1]:.1%})",
            f"  {len(self.decisions)} changes tried, {kept} kept, in {self.calls} batched calls ({self.scored} hypotheses scored)",
        ]
        if len(self.curve) > 1:
            lines.append("  tau      edges  claims  LR")
            for p in self.curve:
                lines.append(f"  {p.tau:<8g} {p.edges:>5}  {p.claims:>6}  {p.loss_recovered:.1%} ± {p.stderr:.1%}")
        lines.append(str(self.hypothesis))
        return "\n".join(lines)

    # ---- JSON -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        h = self.hypothesis
        return {
            "kind": "search",
            "start": self.start.name,
            "tau": self.tau,
            "features": list(self.features),
            "metric": self.result.metric,
            "n_rows": self.result.n_rows,
            "seeds": list(self.result.seeds),
            "start_result": {"loss_recovered": _num(self.start_result.loss_recovered), "stderr": _num(self.start_result.stderr),
                             "edges": len(self.start.edges), "claims": len(self.start.claims) - 1},
            "found": {
                "name": h.name,
                "loss_recovered": _num(self.result.loss_recovered),
                "stderr": _num(self.result.stderr),
                "ci": [_num(x) for x in self.result.ci],
                "edges": [
                    {"child": e.child.name, "parent": e.parent.name, "port": e.port,
                     "positions": None if e.positions is None else list(e.positions)}
                    for e in h.edges
                ],
                "claims": [{"name": c.name, "component": str(c.component), "feature": str(c.feature),
                            "scrub_inputs": c.scrub_inputs} for c in h.claims[1:]],
            },
            "steps": [
                {"claim": s.claim, "decisions": [
                    {"change": d.change, "lr_before": _num(d.lr_before), "lr_after": _num(d.lr_after),
                     "kept": d.kept, "reason": d.reason} for d in s.decisions]}
                for s in self.steps
            ],
            "curve": [{"tau": p.tau, "edges": p.edges, "claims": p.claims, "loss_recovered": _num(p.loss_recovered),
                       "stderr": _num(p.stderr)} for p in self.curve],
            "cost": {"batched_calls": self.calls, "hypotheses_scored": self.scored},
        }

    def to_json(self, path: Union[None, str, Path] = None) -> Union[str, Path]:
        """The result as JSON text, or written to ``path`` (returns the path)."""
        data = self.to_dict()
        if path is None:
            return json.dumps(data, indent=2)
        return write_json(path, data)

    # ---- Python -----------------------------------------------------------------------------

    def to_python(self, function: str = "found") -> str:
        """Source code of a function ``found(features=None)`` that rebuilds the found hypothesis
        (``features``: a dict from feature name to `scrub.Feature` for the non-EXACT features)."""
        return to_python(self.hypothesis, function)

    # ---- HTML -----------------------------------------------------------------------------

    def to_html(self, path: Union[None, str, Path] = None) -> Union[str, Path]:
        """A self-contained HTML page: summary, the size-vs-LR curve (SVG) and every decision."""
        from scrub.search.render import page

        text = page(self)
        if path is None:
            return text
        return write_text(path, text)

    def _repr_html_(self) -> str:
        from scrub.search.render import body

        return body(self)
