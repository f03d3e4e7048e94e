"""From exploration to a hypothesis: `propose` turns patching sweeps into a `scrub.Hypothesis`.

* Components: every head or MLP whose importance (`PatchingResult.importance`: the effect when
  denoising, ``1 - effect`` when noising) exceeds ``threshold`` in an activation-patching result
  (with positions patched one at a time, its largest importance over positions), and every
  sender and receiver of an edge found by path patching.
* Edges: a path-patching result with sender ``s`` above the threshold wires ``s`` into each of
  that result's receivers' ports (``"logits"``: the output). A component with no edge found is
  wired into the output (the assumption that it acts directly).
* Every claim is `EXACT` and named after its component, so the hypothesis is a starting point to
  edit (narrow features, drop claims) and then score with `scrub.evaluate`. `as_code` prints it
  as Python to paste into a hypothesis file.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Optional

from scrub.components import MLP, Head
from scrub.data import EXACT
from scrub.errors import HypothesisError, ScrubError
from scrub.hypothesis import Hypothesis
from scrub.patching.result import PatchingResult

__all__ = ["propose", "as_code"]


def _order(component) -> tuple[int, int]:
    """Downstream first: later layers, and an MLP after its layer's heads."""
    return (-component.layer, -int(isinstance(component, MLP)), getattr(component, "head", 0))


def propose(*results: PatchingResult, threshold: float = 0.1, name: str = "proposed by patching") -> Hypothesis:
    """A hypothesis from activation- and path-patching results (see the module docstring).

    Raises:
        ScrubError: no result, something that is not a `PatchingResult`, a bad threshold, or no
            component above the threshold.
    """
    if not results:
        raise ScrubError("propose() needs at least one PatchingResult (from activation_patch or path_patch)")
    for r in results:
        if not isinstance(r, PatchingResult):
            raise ScrubError(f"propose() takes PatchingResults, got {type(r).__name__}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ScrubError(f"threshold={threshold!r}: pass a number (importance, 0..1 on the normalised scale)")
    nodes: set = set()
    edges: dict[Any, list[tuple[Any, str]]] = defaultdict(list)  # sender -> [(receiver, port)]
    for r in results:
        importance = r.importance.tolist()
        for site, value in zip(r.sites, importance):
            if site.kind not in ("head", "mlp") or not value > threshold:
                continue
            component = site.component
            if r.method == "path":
                for receiver, port in r.receivers:
                    if (receiver, port) not in edges[component]:
                        edges[component].append((receiver, port))
                    if receiver != "logits":
                        nodes.add(receiver)
            nodes.add(component)
    if not nodes:
        raise ScrubError(
            f"no head or MLP passes threshold={threshold} in these results; lower the threshold or sweep "
            f"heads/MLPs (q/k/v and resid sweeps name no component to claim)"
        )
    h = Hypothesis(name)
    out = h.output()
    claims: dict[Any, Any] = {}
    for component in sorted(nodes, key=_order):
        into = []
        for receiver, port in edges.get(component, []):
            if receiver == "logits":
                into.append((out, "in"))
            elif receiver in claims:
                into.append((claims[receiver], port))
        if not into:
            into = [(out, "in")]
        try:
            claims[component] = h.claim(component, EXACT, into=into)
        except HypothesisError as exc:  # e.g. a receiver that cannot read this component
            raise ScrubError(f"propose(): could not claim {component}: {exc}") from None
    return h


def _var(component) -> str:
    if isinstance(component, Head):
        return f"head_{component.layer}_{component.head}"
    return f"mlp_{component.layer}"


def _ctor(component) -> str:
    if isinstance(component, Head):
        return f"Head({component.layer}, {component.head})"
    return f"MLP({component.layer})"


def as_code(h: Hypothesis, function: Optional[str] = None) -> str:
    """Python source of a function building ``h`` (EXACT claims of heads and MLPs), to paste into
    a hypothesis file and edit."""
    function = function or "proposed"
    lines = [
        "from scrub import EXACT, MLP, Head, Hypothesis",
        "",
        "",
        f"def {function}() -> Hypothesis:",
        f"    h = Hypothesis({h.name!r})",
        "    out = h.output()",
    ]
    for claim in h.claims[1:]:
        parents = [e for e in h.parents(claim)]
        targets = []
        for e in parents:
            target = "out" if e.parent is h.root else _var(e.parent.component)
            targets.append(f"({target}, {e.port!r})")
        feature = "EXACT" if claim.feature is None or claim.feature.exact else f"Feature({claim.feature.name!r}, ...)"
        into = targets[0] if len(targets) == 1 else "[" + ", ".join(targets) + "]"
        lines.append(f"    {_var(claim.component)} = h.claim({_ctor(claim.component)}, {feature}, into={into})")
    lines.append("    return h")
    return "\n".join(lines) + "\n"
