"""Explore before you hypothesise: activation, path and attribution patching.

`activation_patch` sweeps components (heads' outputs and q/k/v inputs, MLPs, the residual stream,
each optionally per position) between a clean and a corrupted run, in either direction;
`path_patch` patches a sender only along its path into chosen receivers; `attribution_patch`
estimates every cell to first order from one forward and backward pass; `propose` turns a sweep
into a `scrub.Hypothesis` for `scrub.evaluate`. All of them return a `PatchingResult`.

This package sits above the engine and `scrub.api`; nothing below imports it.
"""

from scrub.patching.activation import activation_patch
from scrub.patching.attribution import attribution_patch
from scrub.patching.explore import Exploration, explore
from scrub.patching.inputs import CORRUPT_KEY, paired
from scrub.patching.path import path_patch
from scrub.patching.propose import as_code, propose
from scrub.patching.result import PatchingResult, agreement
from scrub.patching.sites import Site

__all__ = [
    "activation_patch",
    "path_patch",
    "attribution_patch",
    "propose",
    "as_code",
    "explore",
    "Exploration",
    "paired",
    "CORRUPT_KEY",
    "PatchingResult",
    "agreement",
    "Site",
]
