"""The values a report holds: subgraph results, redundancy checks, comparisons, generality.

Every class is a frozen attrs value with ``to_dict`` (JSON-ready numbers) and a readable
``__str__``; `Report` and `Comparison` also write JSON and HTML files, show themselves in a
notebook (``_repr_html_``: the report's own HTML section) and draw matplotlib figures (``plot``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import attrs

from scrub.metrics import Estimate
from scrub.reporting.terminal import format_table, num, pct
from scrub.result import Result

__all__ = ["SubgraphResult", "JointRemoval", "Compensation", "Report", "PairedDifference", "Comparison"]


_CONTRIBUTION_NOTE = (
    "  leave-one-out rows: the drop in LR when that claim is removed (its contribution);\n"
    "  alone, path and named rows: what the rest of the hypothesis adds to that subgraph (not a drop)."
)


def _est(e: Optional[Estimate], as_pct: bool = True) -> str:
    if e is None:
        return ""
    f = pct if as_pct else num
    return f"{f(e.value)} [{f(e.ci[0])}, {f(e.ci[1])}]"


@attrs.frozen(eq=False)
class SubgraphResult:
    """Loss recovered by one subgraph; ``contribution`` = LR(full) - LR(subgraph) (paired)."""

    kind: str
    name: str
    claims: tuple[str, ...]
    result: Result
    contribution: Optional[Estimate] = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "claims": list(self.claims),
            "result": self.result.to_dict(),
            "contribution": None if self.contribution is None else self.contribution.to_dict(),
        }


@attrs.frozen
class JointRemoval:
    """Joint versus individual removal of claims ``a`` and ``b`` (drops in loss recovered).

    ``interaction = drop(a and b) - drop(a) - drop(b)``. Markedly positive is super-additive, and
    called OR-like (the two back each other up) only when removing each alone clearly costs loss
    recovered; markedly negative is sub-additive, AND-like under the same condition. ``flagged``:
    any verdict other than ``"additive"``.
    """

    a: str
    b: str
    drop_a: Estimate
    drop_b: Estimate
    drop_ab: Estimate
    interaction: Estimate
    verdict: str  # "OR-like (backup)", "AND-like", "super-additive", "sub-additive" or "additive" (see scrub.reporting.wording.verdict)

    @property
    def flagged(self) -> bool:
        return self.verdict != "additive"

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "verdict": self.verdict, "flagged": self.flagged,
            **{k: getattr(self, k).to_dict() for k in ("drop_a", "drop_b", "drop_ab", "interaction")},
        }


@attrs.frozen
class Compensation:
    """Direct effect of ``b`` with and without ``a`` knocked out (in metric units, "harm" sign:
    positive means resampling ``b -> output`` makes the model worse)."""

    a: str
    b: str
    direct_b: Estimate
    direct_b_after_knockout: Estimate
    rise: Estimate
    flagged: bool
    metric: str = "cross_entropy"

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "flagged": self.flagged, "metric": self.metric,
            **{k: getattr(self, k).to_dict() for k in ("direct_b", "direct_b_after_knockout", "rise")},
        }


@attrs.frozen(eq=False)
class Report:
    """Everything `scrub.report` found about one hypothesis.

    Attributes:
        hypothesis: the hypothesis name.
        full: the Result of the whole hypothesis.
        subgraphs: leave-one-out, alone, path and named variants with their contributions.
        joint: joint-versus-individual removal for pairs of claims.
        compensation: the knock-out / direct-effect check for the same pairs.
        generality: the hypothesis on other datasets, by name.
        findings: plain-language statements (flagged backups, tiny classes, ...).
        meta: versions, seeds, fingerprints of model and data: what reproduces the numbers.
        graph: nodes and edges of the hypothesis, for drawing.
    """

    hypothesis: str
    full: Result
    subgraphs: tuple[SubgraphResult, ...]
    joint: tuple[JointRemoval, ...]
    compensation: tuple[Compensation, ...]
    generality: tuple[tuple[str, Result], ...]
    findings: tuple[str, ...]
    meta: dict
    graph: dict
    subpopulations: Optional[Any] = None  # scrub.reporting.subpopulations.Subpopulations

    def to_dict(self) -> dict[str, Any]:
        """Every number of the report, JSON-ready."""
        out = {
            "kind": "scrub.report",
            "hypothesis": self.hypothesis,
            "full": self.full.to_dict(),
            "subgraphs": [s.to_dict() for s in self.subgraphs],
            "redundancy": {
                "joint": [j.to_dict() for j in self.joint],
                "compensation": [c.to_dict() for c in self.compensation],
            },
            "generality": [{"dataset": name, "result": r.to_dict()} for name, r in self.generality],
            "findings": list(self.findings),
            "meta": self.meta,
            "graph": self.graph,
        }
        if self.subpopulations is not None:
            out["subpopulations"] = self.subpopulations.to_dict()
        return out

    def to_json(self, path: str | Path) -> Path:
        """Write `to_dict` as JSON, atomically."""
        from scrub.reporting.files import write_json

        return write_json(path, self.to_dict())

    def to_html(self, path: str | Path) -> Path:
        """Write a self-contained HTML report (plots embedded), atomically."""
        from scrub.reporting.files import write_text
        from scrub.reporting.html import render_report

        return write_text(path, render_report(self.to_dict()))

    def _repr_html_(self) -> str:
        """The report's HTML section, for a notebook cell (inline SVG and CSS, no scripts)."""
        from scrub.reporting.html import report_html

        return report_html(self.to_dict())

    def plot(self, kind: str = "lr"):
        """A matplotlib `Figure` for a paper: ``"lr"`` (loss recovered of the full hypothesis and
        every subgraph, with CIs, one panel per kind), ``"graph"`` (the hypothesis graph coloured by
        each claim's leave-one-out contribution), ``"redundancy"`` (the pair matrices),
        ``"subpopulations"`` (loss recovered within each value of every ``by=`` feature and on the
        worst rows, with CIs) or ``"rows"`` (the histogram of per-row recovered loss, with the
        cancellation check). Save it
        with ``fig.savefig("x.pdf")`` (PNG, PDF and SVG work); no display is needed.

        Raises:
            ReportError: an unknown ``kind``, ``"redundancy"`` when no pairs were checked, or
                ``"subpopulations"`` / ``"rows"`` on a report that holds no subpopulation data.
        """
        from scrub.reporting.plot import plot_report

        return plot_report(self.to_dict(), kind)

    def __str__(self) -> str:
        f = self.full
        parts = [
            f"Report for {self.hypothesis!r}",
            str(f),
        ]
        if self.subgraphs:
            rows = [
                [s.kind, s.name, pct(s.result.loss_recovered), pct(s.result.stderr, 2), _est(s.contribution)]
                for s in self.subgraphs
            ]
            parts += ["", format_table(
                ["kind", "subgraph", "LR", "SE", "full - subgraph [CI]"], rows,
                "Subgraphs (full - subgraph = LR(full) - LR(subgraph), paired)",
            )]
            parts.append(_CONTRIBUTION_NOTE)
        if self.joint:
            rows = [
                [f"{j.a} + {j.b}", _est(j.drop_a), _est(j.drop_b), _est(j.drop_ab), _est(j.interaction), j.verdict]
                for j in self.joint
            ]
            parts += ["", format_table(
                ["pair", "drop(a)", "drop(b)", "drop(a,b)", "interaction", "verdict"], rows,
                "Serial redundancy: joint versus individual removal (drops in loss recovered)",
            )]
        if self.compensation:
            rows = [
                [f"{c.a} -> {c.b}", _est(c.direct_b, False), _est(c.direct_b_after_knockout, False),
                 _est(c.rise, False), "rises" if c.flagged else ""]
                for c in self.compensation
            ]
            parts += ["", format_table(
                ["knock out a -> b", "direct effect of b", "after knock-out", "rise", "flagged"], rows,
                f"Compensation: direct effect of b ({self.compensation[0].metric}, harm) with a knocked out",
            )]
        if self.generality:
            rows = [[name, pct(r.loss_recovered), pct(r.stderr, 2), f"[{pct(r.ci[0])}, {pct(r.ci[1])}]",
                     num(r.m_model), num(r.m_scrub), num(r.m_base)] for name, r in self.generality]
            parts += ["", format_table(["dataset", "LR", "SE", "CI", "model", "scrubbed", "baseline"], rows, "Generality")]
        if self.subpopulations is not None:
            parts += ["", str(self.subpopulations)]
        if self.findings:
            parts += ["", "Findings:"] + [f"  - {x}" for x in self.findings]
        return "\n".join(parts)


@attrs.frozen
class PairedDifference:
    """LR(a) - LR(b) on the same rows and seeds; ``verdict`` states an order only when the CI excludes 0."""

    a: str
    b: str
    difference: Estimate
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "difference": self.difference.to_dict(), "verdict": self.verdict}


@attrs.frozen(eq=False)
class Comparison:
    """Several hypotheses on the same reference rows and seeds, with paired differences."""

    results: tuple[Result, ...]
    differences: tuple[PairedDifference, ...]
    meta: dict

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "scrub.comparison",
            "results": [r.to_dict() for r in self.results],
            "differences": [d.to_dict() for d in self.differences],
            "meta": self.meta,
        }

    def to_json(self, path: str | Path) -> Path:
        from scrub.reporting.files import write_json

        return write_json(path, self.to_dict())

    def to_html(self, path: str | Path) -> Path:
        from scrub.reporting.files import write_text
        from scrub.reporting.html import render_comparison

        return write_text(path, render_comparison(self.to_dict()))

    def _repr_html_(self) -> str:
        """The comparison's HTML section, for a notebook cell (inline SVG and CSS, no scripts)."""
        from scrub.reporting.html import comparison_html

        return comparison_html(self.to_dict())

    def plot(self, kind: str = "lr"):
        """A matplotlib `Figure`: ``"lr"`` (loss recovered per hypothesis with CIs) or
        ``"differences"`` (the paired differences with CIs).

        Raises:
            ReportError: an unknown ``kind``, or ``"differences"`` with no pairs.
        """
        from scrub.reporting.plot import plot_comparison

        return plot_comparison(self.to_dict(), kind)

    def __str__(self) -> str:
        first = self.results[0]
        rows = [[r.hypothesis, pct(r.loss_recovered), pct(r.stderr, 2), f"[{pct(r.ci[0])}, {pct(r.ci[1])}]",
                 num(r.m_scrub)] for r in self.results]
        parts = [format_table(
            ["hypothesis", "LR", "SE", f"{int(100 * first.ci_level)}% CI", first.metric], rows,
            f"Comparison on {first.n_rows} rows of {first.dataset!r}, seeds {list(first.seeds)} "
            f"(model {num(first.m_model)}, baseline {num(first.m_base)})",
        )]
        if self.differences:
            rows = [[f"{d.a} - {d.b}", _est(d.difference), d.verdict] for d in self.differences]
            parts += ["", format_table(["pair", "LR difference [CI]", "verdict"], rows, "Paired differences")]
        return "\n".join(parts)
