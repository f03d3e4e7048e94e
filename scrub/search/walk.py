"""`scrub.search`: ACDC's walk (Conmy et al. 2023) over a hypothesis, with scrubbing semantics.

Claims are visited from the output backwards (reverse topological order: a claim after every
claim it feeds). At each claim the walk tries every candidate change (`scrub.search.changes`):
removing each edge into the claim (the parent's port then reads that child from the resampled
"other" datum) and, when candidate features are given and the claim is `EXACT`, coarsening it to
each of them. A change is kept when loss recovered drops by less than ``tau``
(``LR_before - LR_after < tau``; a change that raises LR is kept too).

One step (one claim) costs two batched calls, each one engine call per seed with every
hypothesis of the call on the same rows and seeds (common random numbers); a call holds at most
`_EDGES_AT_ONCE` edges of candidate copies, so a step on a large hypothesis takes several:

1. the current hypothesis and each candidate alone: candidates whose drop is ``>= tau`` are
   dropped for good;
2. the surviving candidates, best first, applied cumulatively (prefixes ``c1``, ``c1+c2``, ...):
   ACDC's sequential rule decides each in the context of the ones kept before it, so a change
   is kept if the prefix that adds it drops LR by less than ``tau`` from the prefix before. At the
   first prefix that fails, the rest are tried again (from call 1) on the new hypothesis (and
   prefixes after it, in a later batch, are not scored).

Two coarsenings of one claim are alternatives: only the best one enters the prefixes.

From `Hypothesis.full` the walk scales to deep models: `full` records the model's shape, so every
claim whose whole upstream is still claimed EXACT (complete) treeifies as a leaf on its datum
(`scrub.hypothesis.collapse`). When the edges into a claim at layer ``l`` are tried, everything
below it is still complete, so a candidate's tree holds one copy of each modified claim per kept
path to the output and leaves below: a search from `full` of a 12-layer, 12-head model (158
claims, 32,936 edges) is a few minutes on a CPU (`benchmarks/bench_search.py`), dominated by
copying the hypothesis once per candidate (O(edges) each) while the graph is large.
"""

from __future__ import annotations

import contextlib
import gc
import math
from typing import Callable, Optional, Sequence, Union

import networkx as nx

from scrub.api import make_engine, prepare, scrub_many
from scrub.data import Dataset, Feature
from scrub.errors import HypothesisError, OptionsError
from scrub.hypothesis import Claim, Hypothesis
from scrub.hypothesis.full import tree_size
from scrub.options import RunOptions, check_dataset, check_model
from scrub.search.changes import Change, Coarsen, RemoveEdge, apply, size
from scrub.search.result import CurvePoint, Decision, SearchResult, Step

__all__ = ["search", "Features"]

# candidate features: one list for every claim, or a list per claim name / component
Features = Union[None, Sequence[Feature], dict]

_CANDIDATE_BOOT = 10  # candidates need the point value only; the bootstrap is for the final result
_EDGES_AT_ONCE = 2_000_000  # edges of candidate copies alive at once (~1 GB): 60 copies of a 12-layer full


def _check_tau(value, name: str = "tau") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0 or math.isinf(value):
        raise OptionsError(
            f"search(): {name}={value!r} is not allowed; tau is the largest drop in loss recovered a change may "
            f"cause and must be a finite number >= 0 (e.g. 0.02 for two percentage points)"
        )
    return float(value)


def _check_features(features: Features) -> Features:
    if features is None:
        return None

    def check_list(items, where: str) -> list[Feature]:
        if isinstance(items, Feature) or not isinstance(items, (list, tuple)):
            raise OptionsError(f"search(): features{where} must be a list of scrub.Feature, got {items!r}")
        if not items:
            raise OptionsError(
                f"search(): features{where} is empty, so there is nothing to coarsen EXACT to; give candidate "
                f"features (e.g. [Feature.token(), Feature.prev_token()]) or features=None to only remove edges"
            )
        for f in items:
            if not isinstance(f, Feature) or f.exact:
                raise OptionsError(
                    f"search(): features{where} holds {f!r}; candidates must be scrub.Feature values other than EXACT"
                )
        return list(items)

    if isinstance(features, dict):
        if not features:
            raise OptionsError("search(): features={} names no claim; give a list, a non-empty dict, or None")
        return {key: check_list(items, f"[{key!r}]") for key, items in features.items()}
    return check_list(features, "")


def _candidate_features(features: Features, claim: Claim) -> list[Feature]:
    if features is None or claim.is_output or not (claim.feature is not None and claim.feature.exact):
        return []
    if isinstance(features, dict):
        return list(features.get(claim.name, features.get(claim.component, [])))
    return list(features)


def _order(h: Hypothesis) -> list[str]:
    """Claim names from the output backwards: every claim after all the claims it feeds."""
    reverse = h.graph.reverse(copy=True)  # parent -> child
    index = {c: c.index for c in h.claims}
    return [c.name for c in nx.lexicographical_topological_sort(reverse, key=index.get)]


class _Scorer:
    """Scores lists of hypotheses with one engine and one options value (a call per seed)."""

    def __init__(self, model, data: Dataset, options: RunOptions, batched: bool = True) -> None:
        import attrs

        self.model, self.data = model, data
        self.options = attrs.evolve(options, n_boot=_CANDIDATE_BOOT, progress=False)
        self.final_options = options
        self.runner = make_engine(options.engine, model, data, **options.engine_options())
        self.calls = 0
        self.scored = 0
        self.batched = batched

    def lr(self, hyps: list[Hypothesis]) -> list[float]:
        # no `prepare` here: `search` prepared the start, and every hypothesis scored is derived from
        # it by `apply` (removals and coarsenings keep a hypothesis valid; a coarse feature is
        # checked when planned, before any forward pass). Validating each variant again costs
        # O(edges) apiece, which dominates a search from a deep `Hypothesis.full`.
        groups = [hyps] if self.batched else [[h] for h in hyps]
        results = [r for group in groups for r in scrub_many(group, self.model, self.data, self.options, runner=self.runner)]
        self.calls += len(groups)
        self.scored += len(hyps)
        return [r.loss_recovered for r in results]

    def per_call(self, current: Hypothesis) -> int:
        """How many copies of ``current`` one call scores (`_EDGES_AT_ONCE` edges in all)."""
        return max(1, _EDGES_AT_ONCE // max(1, current._graph.number_of_edges()))

    def lr_of(self, current: Hypothesis, changes: Sequence[Sequence[Change]], names: Sequence[str],
              with_current: bool = False) -> list[float]:
        """LR of ``apply(current, changes[i], names[i])`` for each ``i`` (and first of ``current``
        itself, ``with_current``), the copies made and scored a batch at a time: at most
        `_EDGES_AT_ONCE` edges of copies are alive at once (a copy of a 33k-edge hypothesis takes
        ~15 MB, and a step from `Hypothesis.full` tries hundreds)."""
        per_call, edges = self.per_call(current), current._graph.number_of_edges()
        out: list[float] = []
        for i in range(0, len(changes), per_call):
            hyps = [apply(current, c, name=n) for c, n in zip(changes[i : i + per_call], names[i : i + per_call])]
            out += self.lr(([current] if with_current and i == 0 else []) + hyps)
            large = len(hyps) * edges >= _EDGES_AT_ONCE // 4
            del hyps
            if large and not gc.isenabled():
                gc.collect()  # the walk pauses the collector: free this batch's reference cycles now
        if with_current and not changes:
            out = self.lr([current])
        return out

    def final(self, h: Hypothesis):
        return scrub_many([h], self.model, self.data, self.final_options, runner=self.runner)[0]


def _key(change: Change) -> tuple:
    return (str(change), id(change.feature) if isinstance(change, Coarsen) else None)


def _candidates(h: Hypothesis, name: str, features: Features, decided: set) -> list[Change]:
    claim = h.find(name)
    found: list[Change] = [RemoveEdge.of(e) for e in h.children(claim)]
    found += [Coarsen(name, f) for f in _candidate_features(features, claim)]
    return [c for c in found if _key(c) not in decided]


def _walk(start: Hypothesis, scorer: _Scorer, tau: float, features: Features, log) -> tuple[Hypothesis, list[Step]]:
    current = start
    steps: list[Step] = []
    for name in _order(start):
        decisions: list[Decision] = []
        decided: set = set()
        while name in {c.name for c in current.claims}:  # a removal below may take the claim away
            cands = _candidates(current, name, features, decided)
            if not cands:
                break
            lrs = scorer.lr_of(current, [[c] for c in cands], [f"{start.name}: {c}" for c in cands], with_current=True)
            before, passing = lrs[0], []
            for change, after in zip(cands, lrs[1:]):
                if before - after < tau:
                    passing.append((before - after, change, after))
                else:
                    decided.add(_key(change))
                    decisions.append(Decision(str(change), before, after, False, "drops LR by tau or more"))
            if not passing:
                break
            passing.sort(key=lambda item: item[0])
            chosen = [c for i, (_, c, _) in enumerate(passing)
                      if not (isinstance(c, Coarsen) and any(isinstance(o, Coarsen) for _, o, _ in passing[:i]))]
            label = [f"{start.name}: {name} +{i + 1}" for i in range(len(chosen))]
            lrs = [passing[0][2]]  # the first prefix is the best candidate alone, scored above
            last, kept = before, 0
            for i, change in enumerate(chosen):
                if i == len(lrs):  # the next batch of prefixes (all the rest, unless they are large):
                    j = min(len(chosen), i + scorer.per_call(current))  # none after the first that fails
                    lrs += scorer.lr_of(current, [chosen[: k + 1] for k in range(i, j)], label[i:j])
                after = lrs[i]
                if last - after >= tau:
                    break  # this one and the rest are tried again on the new hypothesis
                decided.add(_key(change))
                decisions.append(Decision(str(change), last, after, True, "kept"))
                last, kept = after, kept + 1
            current = apply(current, chosen[:kept], name=label[kept - 1])
            if log:
                log(f"{name}: kept {kept} of {len(cands)} changes; LR {before:.4f} -> {last:.4f}; {size(current)} edges, "
                    f"{tree_size(current)} tree nodes; {scorer.scored} hypotheses scored")
        steps.append(Step(name, tuple(decisions)))
    return current, steps


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off for the walk, back on (and run) after it.

    A walk from a deep `Hypothesis.full` makes a copy of a hypothesis of tens of thousands of
    edges per candidate: millions of long-lived objects, which every full collection rescans
    (measured: it makes each copy ~2.5x slower). The walk makes no reference cycles of its own;
    what it frees, reference counting frees at once."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
            gc.collect()


def _start(start, model, where: str) -> Hypothesis:
    if isinstance(start, Hypothesis):
        return start
    if isinstance(start, str) and start == "full":
        return Hypothesis.full(model)
    if start is model:
        return Hypothesis.full(model)
    raise HypothesisError(
        f"{where}: start must be a Hypothesis, the model itself or 'full' (then the search starts from "
        f"Hypothesis.full(model)), got {type(start).__name__}"
    )


def search(
    start,
    model,
    data: Dataset,
    *,
    tau: float = 0.02,
    features: Features = None,
    taus: Optional[Sequence[float]] = None,
    metric=None,
    seeds=1,
    n: Optional[int] = None,
    engine: Optional[str] = None,
    batch_size: Optional[int] = None,
    memory_budget_mb: Optional[float] = None,
    device=None,
    ci_level: float = 0.95,
    n_boot: int = 1000,
    progress: Union[bool, Callable[[str], None]] = False,
    name: Optional[str] = None,
    batch_candidates: bool = True,
) -> SearchResult:
    """Prune (and coarsen) a hypothesis while loss recovered holds: ACDC's walk, scrubbing semantics.

    Args:
        start: the hypothesis to prune, or the model itself / ``"full"`` for `Hypothesis.full(model)`.
        model, data: as in `scrub.evaluate`.
        tau: keep a change if loss recovered drops by less than ``tau`` (a fraction: 0.02 = 2 points).
        features: candidate features to coarsen `EXACT` claims to: one list for every claim, or a
            dict from claim name (or component) to a list; None: only remove edges. Coarsening a
            claim that has children to a per-position feature (``Feature.token()``) treeifies it
            per position (one copy of its subtree per position), which is costly on a deep start:
            give such features for leaves (embeddings, early heads) with a dict.
        taus: also search with each of these thresholds, for the size-vs-LR curve (``tau`` is
            always on it).
        metric, seeds, n, engine, batch_size, memory_budget_mb, device, ci_level, n_boot: as in
            `scrub.evaluate` (every candidate is scored on the same rows and seeds).
        progress: print one line per step (True), or call this function with each line.
        name: the found hypothesis's name (default: "<start> (searched, tau=...)").
        batch_candidates: False scores every candidate in its own engine call (same decisions,
            slower: for benchmarks).

    Returns:
        A `SearchResult`: the found hypothesis, its `Result`, the decisions and the curve.

    Raises:
        ScrubError: a bad tau, an empty or non-feature candidate list, a start that is not a
            hypothesis of this model, or any problem `scrub.evaluate` refuses; all before any
            forward pass.
    """
    tau = _check_tau(tau)
    if taus is not None and (isinstance(taus, (str, bytes)) or not isinstance(taus, (list, tuple))):
        raise OptionsError(f"search(): taus must be a list of numbers, got {taus!r}")
    curve_taus = sorted({tau, *(_check_tau(t, "taus[...]") for t in (taus or ()))})
    features = _check_features(features)
    check_model(model, "search()")
    check_dataset(data, "search()")
    h = _start(start, model, "search()")
    options = RunOptions(seeds=seeds, metric=metric, n=n, engine=engine, batch_size=batch_size,
                         memory_budget_mb=memory_budget_mb, device=device, ci_level=ci_level, n_boot=n_boot)
    prepare([h], model, data, options, "search()")  # every check before the first forward pass
    scorer = _Scorer(model, data, options, batched=bool(batch_candidates))
    log = progress if callable(progress) else (print if progress else None)
    found: dict[float, tuple[Hypothesis, list[Step]]] = {}
    with _collector_paused():
        for t in curve_taus:
            found[t] = _walk(h, scorer, t, features, log)
    label = name or f"{h.name} (searched, tau={tau:g})"
    best, steps = found[tau]
    best = apply(best, [], name=label)
    finals = {t: scorer.final(found[t][0]) for t in curve_taus}
    start_result = scorer.final(h)
    curve = tuple(
        CurvePoint(t, len(found[t][0].edges), len(found[t][0].claims) - 1, finals[t].loss_recovered, finals[t].stderr,
                   found[t][0])
        for t in curve_taus
    )
    feature_names = _feature_names(features)
    return SearchResult(hypothesis=best, result=attrs_evolve_name(finals[tau], label), start=h, start_result=start_result,
                        tau=tau, steps=tuple(steps), curve=curve, calls=scorer.calls, scored=scorer.scored,
                        features=feature_names)


def _feature_names(features: Features) -> tuple[str, ...]:
    if features is None:
        return ()
    if isinstance(features, dict):
        return tuple(sorted({f.name for items in features.values() for f in items}))
    return tuple(f.name for f in features)


def attrs_evolve_name(result, label: str):
    import attrs

    return attrs.evolve(result, hypothesis=label)
