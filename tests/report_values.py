"""Report, Comparison and Result values built by hand (no model, no forward pass) for the render,
notebook, plot and browser tests: every field the renderers read, with chosen numbers that
include the awkward cases (a value beyond the axis, an unknown contribution, a flagged pair)."""

from __future__ import annotations

import math

from scrub.metrics import Estimate
from scrub.reporting.results import Comparison, Compensation, JointRemoval, PairedDifference, Report, SubgraphResult
from scrub.result import Result


def estimate(value: float, half: float = 0.02) -> Estimate:
    return Estimate(value, half / 1.96, (value - half, value + half))


def result(name: str, lr: float, half: float = 0.03, dataset: str = "induction") -> Result:
    return Result(
        hypothesis=name, metric="cross_entropy", lower_is_better=True, loss_recovered=lr, stderr=half / 1.96,
        ci=(lr - half, lr + half), ci_level=0.95, m_model=0.28, m_base=7.38, m_scrub=7.38 - lr * 7.1,
        m_model_se=0.01, m_base_se=0.05, m_scrub_se=0.04, n_rows=64, seeds=(0, 1), lr_per_seed=(lr - 0.01, lr + 0.01),
        stderr_seeds=0.01, engine="batched", baseline="output alone", dataset=dataset,
        class_sizes={"token": (1, 6, 20)}, warnings=("feature 'token' has equivalence classes of a single row",),
    )


CLAIMS = ["Head(1.0)", "Embed->Head(1.0).q", "Head(0.3)->Head(1.0).k", "Head(1.1)"]


def report(name: str = "two induction heads", long_labels: bool = False) -> Report:
    """A report of a 4-claim hypothesis with every kind of subgraph, two pairs and one generality set."""
    full = result(name, 0.80)
    lr = {"Head(1.0)": 0.35, "Embed->Head(1.0).q": 0.82, "Head(0.3)->Head(1.0).k": 0.55, "Head(1.1)": 0.61}
    subs = [SubgraphResult("leave-one-out", f"without {c}", (c,), result(f"{name} without {c}", v),
                           estimate(0.80 - v)) for c, v in lr.items()]
    suffix = " kept with its own inputs and nothing else from the hypothesis" if long_labels else ""
    subs += [SubgraphResult("alone", f"{c}{suffix} alone", (c,), result(f"{c} alone", 0.8 - v + 0.1), estimate(v - 0.1))
             for c, v in lr.items()]
    subs.append(SubgraphResult("path", "output <- in:Head(1.0) <- k:Head(0.3)->Head(1.0).k",
                               ("Head(1.0)", "Head(0.3)->Head(1.0).k"), result("path", 2.6, 0.4), estimate(-1.8)))
    subs.append(SubgraphResult("named", "head 1.0 only", ("Head(1.0)",), result("named", -1.4, 0.3), estimate(2.2)))
    joint = (
        JointRemoval("Head(1.0)", "Head(1.1)", estimate(0.45), estimate(0.19), estimate(0.74), estimate(0.10),
                     "OR-like (backup)"),
        JointRemoval("Head(0.3)->Head(1.0).k", "Head(1.1)", estimate(0.25), estimate(0.19), estimate(0.43),
                     estimate(-0.01, 0.03), "additive"),
    )
    comp = (
        Compensation("Head(1.0)", "Head(1.1)", estimate(0.25), estimate(1.30), estimate(1.05), True),
        Compensation("Head(0.3)->Head(1.0).k", "Head(1.1)", estimate(0.25), estimate(0.0), estimate(-0.25), False),
    )
    nodes = [{"name": "output", "component": "Output", "stage": 3, "feature": None, "contribution": None}]
    kinds = {"Head(1.0)": ("Head(1, 0)", 2, "EXACT"), "Embed->Head(1.0).q": ("Embed()", 0, "token"),
             "Head(0.3)->Head(1.0).k": ("Head(0, 3)", 1, "prev_token"), "Head(1.1)": ("Head(1, 1)", 2, "EXACT")}
    nodes += [{"name": c, "component": kinds[c][0], "stage": kinds[c][1], "feature": kinds[c][2],
               "contribution": 0.80 - lr[c]} for c in CLAIMS]
    nodes[2]["contribution"] = math.nan  # unknown: drawn grey
    edges = [{"child": "Head(1.0)", "parent": "output", "port": "in", "positions": None},
             {"child": "Head(1.1)", "parent": "output", "port": "in", "positions": None},
             {"child": "Embed->Head(1.0).q", "parent": "Head(1.0)", "port": "q", "positions": None},
             {"child": "Head(0.3)->Head(1.0).k", "parent": "Head(1.0)", "port": "k", "positions": [3, 4]}]
    meta = {"versions": {"scrub": "source", "torch": "2.13.0", "python": "3.11"}, "seeds": [0, 1],
            "model": {"name": "induction-2l", "fingerprint": "0123456789abcdef"}}
    return Report(
        hypothesis=name, full=full, subgraphs=tuple(subs), joint=joint, compensation=comp,
        generality=(("short repeats", result(name, 0.43, 0.08, "induction-short")),),
        findings=("Head(1.0) and Head(1.1): joint removal costs more than the two single removals",),
        meta=meta, graph={"nodes": nodes, "edges": edges},
    )


def comparison() -> Comparison:
    a, b = result("heads only", 0.62), result("two induction heads", 0.80)
    return Comparison(results=(a, b), differences=(PairedDifference(a.hypothesis, b.hypothesis, estimate(-0.18),
                                                                    "two induction heads > heads only"),),
                      meta={"seeds": [0, 1], "common_random_numbers": True})
