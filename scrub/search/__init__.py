"""Search over hypotheses: the smallest hypothesis that holds, and where a hypothesis fails.

`search` walks a hypothesis from the output backwards (ACDC, Conmy et al. 2023, with causal-
scrubbing semantics), removing edges and coarsening EXACT claims while loss recovered holds;
`scrub.search.changes` holds the changes it tries, `scrub.search.result` what it returns. It can
start from the whole model (`Hypothesis.full`, even of GPT-2 small's 12 layers): complete claims
treeify as leaves, so only what the walk changed is expanded (`scrub.search.walk`).
"""

import sys
import types

from scrub.search.changes import Coarsen, RemoveEdge, apply
from scrub.search.result import CurvePoint, Decision, SearchResult, Step
from scrub.search.walk import search
from scrub.search.worst import WorstSubpopulation, worst_subpopulation

__all__ = ["search", "SearchResult", "Decision", "Step", "CurvePoint", "RemoveEdge", "Coarsen", "apply", "worst_subpopulation", "WorstSubpopulation"]


class _CallableModule(types.ModuleType):
    """``scrub.search`` is this package and also the function `search`: ``scrub.search(h, model, data)``
    calls it, while ``import scrub.search.changes`` and ``from scrub.search import X`` still work."""

    def __call__(self, *args, **kwargs) -> SearchResult:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
