"""Planning: treeified hypothesis + dataset + seed -> Schedule of sampled rows. No forward passes.

The Schedule fixes every random choice of one scrub: for each tree node, the dataset row(s) its
claim is evaluated on (its *datum*) and, for nodes with inputs, the *other* datum that feeds every
input the hypothesis does not claim. Sampling follows DESIGN.md section 1 to the letter:

* the root's datum is the reference row (its label scores the loss);
* at each node the "other" datum is drawn first (uniform over the dataset), then each child in
  the order it was claimed, depth first;
* a child's datum is drawn uniformly with replacement from the rows that agree with its parent's
  datum on the child's feature (`EXACT`: the parent's datum itself, no draw); a per-position
  feature draws one row per (row, position), agreeing at that position only;
* a node with children whose datum is per position is treeified per output position: position
  ``t`` of its output comes from its own copy, holding the datum drawn for ``t``, with its own
  "other" datum and child draws (copies in position order);
* a complete claim (its whole upstream claimed EXACT, for the model shape the hypothesis
  records: `scrub.hypothesis.collapse`) is a leaf on its datum: its subtree draws nothing.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import attrs
import torch
from torch import Tensor

from scrub.components import Component
from scrub.data import EXACT, Dataset, Feature, FeatureValues, PoolIndex, sample_matching
from scrub.errors import ScheduleError
from scrub.hypothesis import Claim, Edge, Hypothesis, TreeSpec, collapse

__all__ = ["ScheduleNode", "Schedule", "plan", "FeatureCache", "size_statistics"]


@attrs.frozen(eq=False)
class ScheduleNode:
    """One tree node with its sampled rows.

    Attributes:
        claim: the claim this node is a copy of.
        edge: the edge into the parent (``None`` at the root).
        datum: ``[n]`` rows (one per reference row), or ``[n, pos]`` (one per reference row and
            position) for a per-position feature.
        other: ``[n]`` rows feeding the unclaimed inputs; ``None`` for leaves and for
            per-position nodes (whose copies hold it).
        children: child nodes, in claim order (empty for leaves and per-position nodes).
        copies: for a per-position node with children, ``{position: copy}`` where each copy
            holds ``datum[:, position]`` and its own other datum and children. Only the
            positions the parent reads are copied.
        path: the path from the root that makes this copy distinct.
    """

    claim: Claim
    edge: Optional[Edge]
    datum: Tensor
    other: Optional[Tensor]
    children: tuple["ScheduleNode", ...]
    copies: Optional[dict[int, "ScheduleNode"]]
    path: tuple[str, ...]
    leaf: bool = False

    @property
    def component(self) -> Component:
        return self.claim.component

    @property
    def is_root(self) -> bool:
        return self.edge is None

    @property
    def is_leaf(self) -> bool:
        """Whether the whole upstream of this node runs on its datum."""
        return self.leaf

    @property
    def per_position(self) -> bool:
        return self.datum.ndim == 2

    def walk(self) -> Iterator["ScheduleNode"]:
        """This node, its copies and every node below, in sampling order."""
        yield self
        for copy in (self.copies or {}).values():
            yield from copy.walk()
        for child in self.children:
            yield from child.walk()

    def select(self, rows: Tensor) -> "ScheduleNode":
        """The same node restricted to reference rows ``rows`` (for chunked execution)."""
        return attrs.evolve(
            self,
            datum=self.datum[rows],
            other=None if self.other is None else self.other[rows],
            children=tuple(c.select(rows) for c in self.children),
            copies=None if self.copies is None else {t: c.select(rows) for t, c in self.copies.items()},
        )


@attrs.frozen(eq=False)
class Schedule:
    """All sampled rows of one scrub of one hypothesis with one seed.

    ``reference`` holds the reference rows (the root's datum); every row index refers to
    ``dataset``. Print it to see the tree, the features and their equivalence-class sizes.
    """

    hypothesis: str
    seed: int
    root: ScheduleNode
    dataset: Dataset
    reference: Tensor
    class_sizes: dict[str, tuple[int, float, int]]  # feature name -> (min, median, max) class size

    @property
    def n_rows(self) -> int:
        return int(self.reference.shape[0])

    def nodes(self) -> Iterator[ScheduleNode]:
        return self.root.walk()

    def select(self, rows: Tensor) -> "Schedule":
        """The schedule restricted to some reference rows (results per row are unchanged)."""
        return attrs.evolve(self, root=self.root.select(rows), reference=self.reference[rows])

    def __str__(self) -> str:
        lines = [
            f"Schedule {self.hypothesis!r}: seed {self.seed}, {self.n_rows} reference rows of "
            f"dataset {self.dataset.name!r} ({len(self.dataset)} rows)"
        ]

        def show(node: ScheduleNode, indent: str) -> None:
            claim = node.claim
            if node.is_root:
                head = "output (datum: reference rows)"
            else:
                e = node.edge
                where = "" if e.positions is None else f" @pos{list(e.positions)}"
                kind = "per-position" if node.per_position else "per-row"
                head = f"<-{e.port}{where}- {claim.name} [{claim.feature}, {kind} datum]"
            if node.is_leaf:
                head += " leaf"
            elif node.copies is not None:
                head += f" treeified into {len(node.copies)} per-position copies"
            lines.append(indent + head)
            for child in node.children:
                show(child, indent + "    ")
            if node.copies:
                first = next(iter(node.copies.values()))
                lines.append(indent + f"    (each copy, e.g. position {next(iter(node.copies))}:)")
                for child in first.children:
                    show(child, indent + "        ")

        show(self.root, "  ")
        if self.class_sizes:
            lines.append("  equivalence classes (min / median / max rows per class):")
            for name, (lo, med, hi) in self.class_sizes.items():
                warn = "  <- small: resampling barely changes the input" if lo < 2 else ""
                lines.append(f"    {name}: {lo} / {med:g} / {hi}{warn}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Schedule({self.hypothesis!r}, seed={self.seed}, rows={self.n_rows}, nodes={sum(1 for _ in self.nodes())})"


class FeatureCache:
    """Features evaluated once per dataset (features are pure, so the values can be shared).

    Everything derived from a feature's values alone is kept too, once per feature: the pool
    grouped by class (`index`) and the class-size statistics (`class_sizes`), so that the many
    schedules of a report (variants x seeds) pay for each once.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._values: dict[int, FeatureValues] = {}
        self._indexes: dict[int, PoolIndex] = {}
        self._stats: dict[int, tuple[int, float, int]] = {}
        self._draws: dict[int, _Draws] = {}
        self._trees: dict[tuple, tuple[Hypothesis, TreeSpec]] = {}

    def __call__(self, feature: Feature) -> FeatureValues:
        key = id(feature)
        if key not in self._values:
            self._values[key] = feature.evaluate(self.dataset)
        return self._values[key]

    def index(self, feature: Feature) -> PoolIndex:
        """The pool grouped by ``feature``'s classes (for `scrub.data.sample_matching`), once per feature."""
        key = id(feature)
        if key not in self._indexes:
            self._indexes[key] = PoolIndex.of(self(feature))
        return self._indexes[key]

    def draws(self, feature: Feature) -> "_Draws":
        """The tables `_Draws` samples ``feature``'s classes from (once per feature)."""
        key = id(feature)
        if key not in self._draws:
            self._draws[key] = _Draws.of(self(feature), self.index(feature))
        return self._draws[key]

    def tree(self, hypothesis: Hypothesis) -> TreeSpec:
        """``hypothesis.tree()``, validated and built once per structure: the many schedules of
        one hypothesis (one per seed) share it. A hypothesis only grows (claims and edges are
        added, never changed or removed: variants are new hypotheses), so its numbers of claims
        and edges identify its state; with its recorded model shape (which claims collapse) they
        key the tree, and a hypothesis changed since gets a new one."""
        key = (
            id(hypothesis),
            len(hypothesis._claims),
            hypothesis._next_edge,
            hypothesis._graph.number_of_edges(),
            hypothesis.shape,
            collapse.ENABLED,
        )
        found = self._trees.get(key)
        if found is None or found[0] is not hypothesis:
            found = self._trees[key] = (hypothesis, hypothesis.tree())
        return found[1]

    def class_sizes(self, used: Optional[Sequence[Feature]] = None) -> dict[str, tuple[int, float, int]]:
        """(min, median, max) class size per evaluated feature (or per feature in ``used``)."""
        keys = None if used is None else {id(f) for f in used}
        out = {}
        for key, values in self._values.items():
            if values.feature.exact or (keys is not None and key not in keys):
                continue
            stats = self._stats.get(key)
            if stats is None:
                stats = self._stats[key] = size_statistics(self.index(values.feature).count)
            label, k = values.feature.name, 2
            while label in out and out[label] != stats:  # same name, different feature: keep apart
                label, k = f"{values.feature.name}#{k}", k + 1
            out[label] = stats
        return out


def size_statistics(count: Tensor) -> tuple[int, float, int]:
    """(min, median, max) over the pool's entries of the size of the class each entry is in.

    ``count[k]`` is the number of pool entries in class ``k`` (`PoolIndex.count`; zero for keys no
    entry has). Each class of ``c`` entries contributes ``c`` entries of size ``c``, so the sorted
    sizes are the sorted non-zero counts, each repeated as often as itself: the median (the lower
    one of an even number, as `torch.median` takes it) is read off their cumulative sums, without
    building the per-entry table.
    """
    sizes = torch.sort(count[count > 0]).values  # [classes] ascending
    reach = torch.cumsum(sizes, 0)  # [classes]: entries up to and including each class
    middle = (int(reach[-1]) - 1) // 2  # index of the lower median among all entries
    median = sizes[int(torch.searchsorted(reach, middle, right=True))]
    return int(sizes[0]), float(median), int(sizes[-1])


def plan(
    hypothesis: Hypothesis,
    data: Dataset,
    seed: int,
    *,
    model=None,
    reference: Optional[Tensor] = None,
    features: Optional[FeatureCache] = None,
) -> Schedule:
    """Sample a Schedule for ``hypothesis`` on ``data`` with ``seed`` (pure: no forward passes).

    Args:
        hypothesis: the hypothesis to scrub.
        data: the dataset; the pool every datum is drawn from.
        seed: the seed of the `torch.Generator` that makes every draw.
        model: if given, the hypothesis is validated against it first.
        reference: the reference rows (default: every row, in order).
        features: a shared cache of evaluated features (reuse it across seeds and variants).

    Raises:
        HypothesisError, FeatureError, ScheduleError: see the messages.
    """
    if model is not None:
        hypothesis.validate(model, n_pos=data.n_pos)
    features = features or FeatureCache(data)
    tree = features.tree(hypothesis)  # validates the structure (once per hypothesis and cache)
    if features.dataset is not data:
        raise ScheduleError("plan(): the feature cache was built for another dataset; build one per dataset")
    if reference is None:
        reference = torch.arange(len(data), device=data.device)
    reference = torch.as_tensor(reference, dtype=torch.long, device=data.device)
    if reference.ndim != 1 or len(reference) == 0 or int(reference.max()) >= len(data) or int(reference.min()) < 0:
        raise ScheduleError(
            f"plan(): reference rows must be a non-empty 1-D tensor of row indices below {len(data)}"
        )
    generator = torch.Generator(device=data.device).manual_seed(int(seed))
    # evaluate every feature up front so shape errors surface before any draw
    used = [node.claim.feature for node in tree.walk() if node.edge is not None]
    for feature in used:
        features(feature)
    sampler = _Sampler(data, features, generator)
    root = sampler.node(tree, reference)
    return Schedule(
        hypothesis=hypothesis.name,
        seed=int(seed),
        root=root,
        dataset=data,
        reference=reference,
        class_sizes=features.class_sizes(used),
    )


class _Sampler:
    """Recursive draws in the order DESIGN.md fixes (other first, then children depth first)."""

    def __init__(self, data: Dataset, features: FeatureCache, generator: torch.Generator) -> None:
        self.data, self.features, self.generator = data, features, generator

    def other(self, n: int) -> Tensor:
        return torch.randint(len(self.data), (n,), generator=self.generator, device=self.data.device)

    def draw_child(self, spec: TreeSpec, parent_datum: Tensor) -> Tensor:
        feature = spec.claim.feature
        if feature is EXACT or feature.exact:
            return parent_datum
        return self.features.draws(feature).draw(parent_datum, self.generator)

    def node(self, spec: TreeSpec, datum: Tensor) -> ScheduleNode:
        edge = spec.edge
        if spec.is_leaf:
            return ScheduleNode(spec.claim, edge, datum, None, (), None, spec.path, leaf=True)
        if datum.ndim == 2:
            # per-position treeification: one copy per position the parent reads
            positions = range(datum.shape[1]) if edge.positions is None else edge.positions
            copies = {int(t): self._expand(spec, datum[:, t]) for t in positions}
            return ScheduleNode(spec.claim, edge, datum, None, (), copies, spec.path)
        return self._expand(spec, datum)

    def _expand(self, spec: TreeSpec, datum: Tensor) -> ScheduleNode:
        other = self.other(datum.shape[0])
        children = []
        for child in spec.children:
            children.append(self.node(child, self.draw_child(child, datum)))
        return ScheduleNode(spec.claim, spec.edge, datum, other, tuple(children), None, spec.path)


@attrs.frozen(eq=False)
class _Draws:
    """One feature's pool, arranged for drawing: `scrub.data.sample_matching` with its per-call
    tables (class keys, class starts and sizes, the row of each pool entry) built once, and flat
    ``take`` gathers instead of multi-dimensional indexing (several times faster on small draws).

    The draws are the same, bit for bit: the same uniform numbers from the generator, turned
    into the same picks (tests/test_planning_tables.py checks it against `sample_matching`).
    """

    values: FeatureValues
    keys: Tensor  # [N] or [N, pos]: the class key of each pool entry
    start: Tensor  # [K]: first entry of each class in the pool order
    last: Tensor  # [K]: the class size minus one (>= 0 for every class a reference can be in)
    rows: Tensor  # [N] or [N * pos]: the dataset row of each entry, in the pool order

    @classmethod
    def of(cls, values: FeatureValues, index: PoolIndex) -> "_Draws":
        ids = values.ids
        if values.per_position:
            n_pos = ids.shape[1]
            keys = ids * n_pos + torch.arange(n_pos, device=ids.device)  # [N, pos]
            rows = index.order // n_pos  # [N * pos]
        else:
            keys, rows = ids, index.order
        return cls(values, keys, index.start, index.count - 1, rows)

    def draw(self, reference: Tensor, generator: torch.Generator) -> Tensor:
        """Rows agreeing with ``reference`` ([m] or [m, pos]) on the feature: [m] or [m, pos]."""
        if not self.values.per_position:
            if reference.ndim == 2:
                return sample_matching(reference, self.values, generator)  # its error message
            ref_keys = self.keys.take(reference)  # [m]
        elif reference.ndim == 2:
            n_pos = self.keys.shape[1]
            ref_keys = self.keys.take(reference * n_pos + torch.arange(n_pos, device=reference.device))  # [m, pos]
        else:
            ref_keys = self.keys.index_select(0, reference)  # [m, pos]
        last = self.last.take(ref_keys)  # count - 1 of each entry's class
        uniform = torch.rand(ref_keys.shape, generator=generator, dtype=torch.float64, device=ref_keys.device)
        # start + min(floor(u * count), count - 1), as sample_matching computes it
        pick = torch.minimum(uniform.mul_(last + 1).long(), last).add_(self.start.take(ref_keys))
        return self.rows.take(pick)
