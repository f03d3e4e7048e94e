"""A hypothesis written as Python source that rebuilds it (`SearchResult.to_python`).

The code makes the claims in the hypothesis's own order (the order sets the sampling order, so
the rebuilt hypothesis draws the same rows with the same seed) with `Hypothesis.claim`, each
into its parents of lower index, and adds the edges into parents made later with
`Hypothesis.connect`. Non-EXACT features are looked up by name in a ``features`` dict.
"""

from __future__ import annotations

from collections import defaultdict

from scrub.components import MLP, Embed, Head, PosEmbed
from scrub.errors import ScrubError
from scrub.hypothesis import Hypothesis

__all__ = ["to_python", "component_code"]


def component_code(component) -> str:
    if isinstance(component, Head):
        return f"Head({component.layer}, {component.head})"
    if isinstance(component, MLP):
        return f"MLP({component.layer})"
    if isinstance(component, Embed):
        return "Embed()"
    if isinstance(component, PosEmbed):
        return "PosEmbed()"
    raise ScrubError(f"to_python(): cannot write component {component!r} as code")


def _feature_code(feature) -> str:
    return "EXACT" if feature.exact else f"features[{feature.name!r}]"


def _into(var: dict, edges) -> str:
    items = ", ".join(f"({var[e.parent.index]}, {e.port!r})" for e in edges)
    return f"[{items}]"


def to_python(h: Hypothesis, function: str = "found") -> str:
    """Source of ``def <function>(features=None) -> Hypothesis`` rebuilding ``h``.

    Raises:
        ScrubError: a claim feeds only claims made after it (no `claim` call can create it first).
    """
    if not function.isidentifier():
        raise ScrubError(f"to_python(function={function!r}): the function name must be a Python identifier")
    needed = sorted({c.feature.name for c in h.claims[1:] if not c.feature.exact})
    lines = [
        "from scrub import EXACT, MLP, Embed, Feature, Head, Hypothesis, PosEmbed",
        *(["from scrub.hypothesis import ModelShape"] if h.shape is not None else []),
        "",
        "",
        f"def {function}(features=None):",
        f'    """Rebuild {h.name!r}: {len(h.claims) - 1} claims, {len(h.edges)} edges.',
    ]
    if needed:
        lines.append(f"    features: a dict with the scrub.Feature named {needed}")
    shape = "" if h.shape is None else f", shape={h.shape!r}"  # keeps complete claims collapsed
    lines += ['    """', "    features = features or {}", f"    h = Hypothesis({h.name!r}{shape})", "    c0 = h.output()"]
    var = {h.root.index: "c0"}
    later = []
    for claim in h.claims[1:]:
        var[claim.index] = f"c{claim.index}"
        edges = h.parents(claim)
        groups = defaultdict(list)  # positions -> edges into earlier claims
        for e in edges:
            if e.parent.index < claim.index:
                groups[e.positions].append(e)
            else:
                later.append(e)
        if not groups:
            raise ScrubError(
                f"to_python(): claim {claim.name!r} feeds only claims made after it; it cannot be written as a "
                f"claim() call in this order"
            )
        (first_pos, first), *rest = groups.items()
        extra = f", positions={list(first_pos)}" if first_pos is not None else ""
        extra += ", scrub_inputs=True" if claim.scrub_inputs else ""
        lines.append(
            f"    {var[claim.index]} = h.claim({component_code(claim.component)}, {_feature_code(claim.feature)}, "
            f"into={_into(var, first)}, name={claim.name!r}{extra})"
        )
        for pos, group in rest:
            where = "" if pos is None else f", positions={list(pos)}"
            lines.append(f"    h.connect({var[claim.index]}, into={_into(var, group)}{where})")
    for e in sorted(later, key=lambda e: e.seq):
        where = "" if e.positions is None else f", positions={list(e.positions)}"
        lines.append(f"    h.connect({var[e.child.index]}, into=[({var[e.parent.index]}, {e.port!r})]{where})")
    lines.append("    return h")
    return "\n".join(lines) + "\n"
