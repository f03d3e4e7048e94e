"""Rebuilding results and comparisons from a result store alone: no model, no dataset, no forward pass.

Cells that differ only in their seed make one `Result` (its seeds: every seed stored). Results that
share everything but the hypothesis (model, dataset, metric, engine settings, reference rows and
baseline) make a `Comparison` over the seeds they all have: the same numbers `scrub.compare`
gives for those hypotheses, rows and seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import attrs
import torch

from scrub.api import build_result
from scrub.reporting.build import paired_differences
from scrub.reporting.results import Comparison
from scrub.result import Result
from scrub.store.cells import Cell, Store, StoreError, as_store
from scrub.store.runs import class_sizes_from_meta

__all__ = ["results", "comparisons", "show"]


@attrs.frozen
class _MetricLabel:
    """What a result needs of its metric: the name and the direction."""

    name: str
    lower_is_better: bool


def _context(cell: Cell, *drop: str) -> str:
    return json.dumps({k: v for k, v in cell.meta["key_parts"].items() if k not in drop}, sort_keys=True)


def _result(cells: list[Cell], ci_level: float, n_boot: int) -> Result:
    cells = sorted(cells, key=lambda c: c.meta["seed"])
    first, meta = cells[0], cells[0].meta
    return build_result(
        meta["hypothesis"], meta["baseline"], _MetricLabel(meta["metric"], bool(meta["lower_is_better"])),
        meta["dataset"], meta["engine"], [c.meta["seed"] for c in cells], first.reference, first.model,
        torch.stack([c.base for c in cells]), torch.stack([c.scrub for c in cells]),
        class_sizes_from_meta(meta["class_sizes"]), ci_level, n_boot, weights=first.weights,
    )


def _groups(store: Store) -> dict[str, dict[str, list[Cell]]]:
    """context (all key parts but hypothesis and seed) -> hypothesis fingerprint -> cells."""
    out: dict[str, dict[str, list[Cell]]] = {}
    for cell in store.cells():
        ctx = _context(cell, "hypothesis", "seed")
        out.setdefault(ctx, {}).setdefault(cell.meta["key_parts"]["hypothesis"], []).append(cell)
    return out


def results(store: Union[str, Path, Store], *, ci_level: float = 0.95, n_boot: int = 1000) -> list[Result]:
    """Every result the store holds: one per hypothesis and context, over all its stored seeds."""
    found = as_store(store)
    return [_result(cells, ci_level, n_boot) for hyps in _groups(found).values() for cells in hyps.values()]


def comparisons(store: Union[str, Path, Store], *, ci_level: float = 0.95, n_boot: int = 1000) -> list[Comparison]:
    """A comparison per context with two or more hypotheses, on the seeds they all have (paired
    differences with common random numbers, as `scrub.compare`)."""
    found = as_store(store)
    out = []
    for hyps in _groups(found).values():
        if len(hyps) < 2:
            continue
        common = set.intersection(*({c.meta["seed"] for c in cells} for cells in hyps.values()))
        if not common:
            continue
        rs = [_result([c for c in cells if c.meta["seed"] in common], ci_level, n_boot) for cells in hyps.values()]
        rs = sorted(_distinct_names(rs, list(hyps)), key=lambda r: r.hypothesis)  # a stable order: by name
        first = rs[0]
        diffs = paired_differences(rs, ci_level, n_boot)
        parts = next(iter(hyps.values()))[0].meta["key_parts"]
        meta = {"source": f"result store {str(found.path)!r}", "seeds": list(first.seeds),
                "reference_rows": first.n_rows, "metric": first.metric, "engine": first.engine,
                "baseline": first.baseline, "ci_level": ci_level, "n_boot": n_boot, "common_random_numbers": True,
                "versions": {"scrub": parts["scrub"]},
                "model": {"fingerprint": parts["model"]}, "dataset": {"name": first.dataset, "fingerprint": parts["dataset"]}}
        out.append(Comparison(results=tuple(rs), differences=tuple(diffs), meta=meta))
    return out


def _distinct_names(rs: list[Result], fingerprints: list[str]) -> list[Result]:
    names = [r.hypothesis for r in rs]
    return [r if names.count(r.hypothesis) == 1 else attrs.evolve(r, hypothesis=f"{r.hypothesis} [{fp[:8]}]")
            for r, fp in zip(rs, fingerprints)]


def _reports(path: Path) -> dict[str, list]:
    """The reports ``scrub run --store`` kept: file stem -> report dicts."""
    out = {}
    for file in sorted((path / "reports").glob("*.json")):
        try:
            out[file.stem] = list(json.loads(file.read_text(encoding="utf-8"))["reports"])
        except (ValueError, KeyError, TypeError) as err:
            raise StoreError(f"{file} is not a report file of scrub run ({err}); delete it or run again") from None
    return out


def _pct(value) -> str:
    return "nan" if value is None else f"{100 * float(value):.1f}%"


def show(store: Union[str, Path, Store], out: Optional[Union[str, Path]] = None) -> str:
    """The store as text: each comparison (or lone result). With ``out`` (a directory), also
    ``comparison-K.json`` / ``.html`` per comparison and ``results.json`` with every result.

    Raises:
        StoreError: the store is missing, empty, incompatible or damaged."""
    path = Path(store.path if isinstance(store, Store) else store)
    if not (path / "store.json").is_file():
        raise StoreError(f"{str(path)!r} is not a result store (no store.json); give the directory a sweep or "
                         f"store=... wrote to")
    found = as_store(path)
    cmps, everything = comparisons(found), results(found)
    reports = _reports(path)
    if not everything and not reports:
        raise StoreError(f"the store {str(path)!r} holds no finished cells yet; run a sweep or an evaluation with "
                         f"store={str(path)!r} first")
    compared = {(r.hypothesis, r.dataset, r.metric, r.n_rows) for c in cmps for r in c.results}
    alone = [r for r in everything if (r.hypothesis, r.dataset, r.metric, r.n_rows) not in compared]
    text = [f"result store {str(path)!r}: {sum(1 for _ in found.cells())} cells, {len(everything)} results, "
            f"{len(cmps)} comparisons"]
    text += ["", *(str(c) + "\n" for c in cmps)]
    text += [str(r) + "\n" for r in alone]
    for name, found_reports in reports.items():
        text.append(f"reports of {name} (scrub run --store):")
        text += [f"  {r.get('hypothesis')}: loss recovered {_pct((r.get('full') or {}).get('loss_recovered'))}"
                 for r in found_reports]
    if out is not None:
        folder = Path(out)
        if reports:
            from scrub.reporting.files import write_text
            from scrub.reporting.html import render_run

            for name, found_reports in reports.items():
                write_text(folder / f"reports-{name}.html", render_run(found_reports, None, title=f"scrub run: {name}"))
        for k, c in enumerate(cmps):
            c.to_json(folder / f"comparison-{k + 1}.json")
            c.to_html(folder / f"comparison-{k + 1}.html")
        from scrub.reporting.files import write_json

        write_json(folder / "results.json", {"kind": "scrub.store", "store": str(path),
                                             "results": [r.to_dict() for r in everything]})
    return "\n".join(text).rstrip() + "\n"
