"""`explore`: the standard first look at a behaviour, in one call (what `scrub patch FILE` runs).

1. Activation patching of every head's output (and every MLP's) in both directions.
2. Path patching into the logits (every head and MLP as a sender), then into each port of every
   component that matters by (1) or as a sender into the logits, one result per receiver port.
3. `propose` on the path results, and the proposal as Python code.

Writes ``<direction>.html`` / ``.json`` for the sweeps and ``paths.json`` when ``out_dir`` is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import attrs

from scrub.components import MLP, Head
from scrub.data import Dataset
from scrub.errors import ScrubError
from scrub.hypothesis import Hypothesis
from scrub.patching.activation import activation_patch
from scrub.patching.inputs import view_of
from scrub.patching.path import path_patch
from scrub.patching.propose import as_code, propose
from scrub.patching.result import PatchingResult

__all__ = ["explore", "Exploration"]


@attrs.frozen(eq=False)
class Exploration:
    """What `explore` found: the sweeps by direction, the path results, the proposal and its code."""

    sweeps: dict
    paths: tuple
    proposal: Hypothesis
    code: str
    files: tuple = ()


def _important(result: PatchingResult, threshold: float) -> list:
    return [s.component for s, imp in zip(result.sites, result.importance.tolist()) if imp > threshold]


def explore(
    model: Any,
    data: Dataset,
    out_dir: Optional[str | Path] = None,
    *,
    corrupt: Any = None,
    metric: Any = None,
    threshold: float = 0.1,
    seeds: Any = (0,),
) -> Exploration:
    """Sweeps in both directions, path patching among what matters, and a proposed hypothesis.

    Path patching runs in the noising direction (necessity: an edge is kept when cutting it
    costs more than ``threshold``). Arguments as in `activation_patch`.
    """
    view = view_of(model)
    families = ["heads"] if view.config.attn_only else ["heads", "mlp"]
    kw = dict(corrupt=corrupt, metric=metric, seeds=seeds)
    sweeps = {d: activation_patch(view, data, families, direction=d, **kw) for d in ("noise", "denoise")}
    senders = families
    paths = [path_patch(view, data, senders, "logits", direction="noise", **kw)]
    receivers = set(_important(sweeps["noise"], threshold)) | set(_important(sweeps["denoise"], threshold))
    receivers |= set(_important(paths[0], threshold))
    for component in sorted(receivers, key=lambda c: (c.layer, isinstance(c, MLP), getattr(c, "head", 0))):
        ports = ("q", "k", "v") if isinstance(component, Head) else ("in",)
        for port in ports:
            try:
                paths.append(path_patch(view, data, senders, [(component, port)], direction="noise", **kw))
            except ScrubError:  # nothing upstream of this receiver (a layer-0 head)
                continue
    proposal = propose(*paths, threshold=threshold)
    code = as_code(proposal)
    files: list[str] = []
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for direction, result in sweeps.items():
            (out / f"{direction}.html").write_text(result.to_html())
            (out / f"{direction}.json").write_text(result.to_json())
            files += [str(out / f"{direction}.html"), str(out / f"{direction}.json")]
        (out / "paths.json").write_text(json.dumps([p.to_dict() for p in paths], indent=2))
        (out / "proposed.py").write_text(code)
        files += [str(out / "paths.json"), str(out / "proposed.py")]
    return Exploration(sweeps=sweeps, paths=tuple(paths), proposal=proposal, code=code, files=tuple(files))
