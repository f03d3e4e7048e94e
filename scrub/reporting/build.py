"""`scrub.report`, `scrub.compare` and `scrub.generality`: the analyses researchers act on.

A report scrubs the hypothesis and its subgraph variants in one `evaluate_many` call (same rows,
same seeds, one shared baseline and clean pass), then derives paired contributions, the serial-
redundancy checks of DESIGN.md section 2, and the hypothesis on other datasets.
"""

from __future__ import annotations

import datetime
from typing import Callable, Mapping, Optional, Sequence, Union

import torch

import attrs

from scrub.api import check_data_fits, evaluate_many, prepare, scrub_many
from scrub.components import Output, stage
from scrub.data import Dataset, Feature
from scrub.errors import ReportError
from scrub.hypothesis import Hypothesis, ModelShape
from scrub.metrics import Estimate, Metric, lr_combination, mean_difference
from scrub.model import ModelView, model_name
from scrub.options import ReportOptions, RunOptions, check_dataset, check_hypothesis, check_model, merge
from scrub.reporting import variants as V
from scrub.reporting.ablation import ablated_logits
from scrub.reporting.files import environment
from scrub.reporting.subpopulations import check_by, subpopulations
from scrub.reporting.results import (
    Comparison,
    Compensation,
    JointRemoval,
    PairedDifference,
    Report,
    SubgraphResult,
)
from scrub.reporting.terminal import pct
from scrub.reporting.wording import joint_finding, verdict
from scrub.result import Result
from scrub.store.keys import model_fingerprint  # the one model hash (the result store keys cells by it)

__all__ = ["report", "compare", "generality"]


def _meta(model, data: Dataset, seeds: Sequence[int], metric: Metric, first: Result, **extra) -> dict:
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": environment(),
        "model": {"name": model_name(model), "fingerprint": model_fingerprint(model)},
        "dataset": {"name": data.name, "rows": len(data), "positions": data.n_pos, "fingerprint": data.fingerprint()},
        "seeds": list(seeds),
        "reference_rows": first.n_rows,
        "metric": metric.name,
        "lower_is_better": metric.lower_is_better,
        "engine": first.engine,
        "baseline": first.baseline,
        **extra,
    }


def _graph(h: Hypothesis, contributions: Mapping[str, Estimate], n_layers: int) -> dict:
    nodes = [
        {
            "name": c.name,
            "component": str(c.component),
            "stage": stage(c.component, n_layers),
            "feature": None if c.feature is None else str(c.feature),
            "contribution": None if c.name not in contributions else contributions[c.name].value,
        }
        for c in h.claims
    ]
    edges = [
        {"child": e.child.name, "parent": e.parent.name, "port": e.port,
         "positions": None if e.positions is None else list(e.positions)}
        for e in h.edges
    ]
    return {"nodes": nodes, "edges": edges}


REPORT_DEFAULTS = dict(
    seeds=2, metric=None, engine=None, baseline=None, n=None, batch_size=None, ci_level=0.95, n_boot=1000,
    progress=False, memory_budget_mb=None, device=None, store=None,
)
REPORT_ONLY_DEFAULTS = dict(
    leave_one_out=True, alone=True, paths=True, paths_limit=64, subgraphs=None, pairs="downstream", max_pairs=20,
    min_effect=0.02, compensation=True, compensation_metric=None, datasets=None, by=None,
)


def report(
    h: Hypothesis,
    model,
    data: Dataset,
    *,
    seeds: Union[int, Sequence[int]] = 2,
    metric: Union[None, str, Metric, Callable] = None,
    engine: Optional[str] = None,
    baseline: Optional[Hypothesis] = None,
    n: Optional[int] = None,
    batch_size: Optional[int] = None,
    leave_one_out: bool = True,
    alone: bool = True,
    paths: bool = True,
    paths_limit: int = 64,
    subgraphs: Optional[Mapping[str, Union[Sequence[str], Hypothesis]]] = None,
    pairs: Union[str, Sequence[Sequence[str]], None] = "downstream",
    max_pairs: int = 20,
    min_effect: float = 0.02,
    compensation: bool = True,
    compensation_metric: Union[None, str, Metric, Callable] = None,
    datasets: Optional[Mapping[str, Dataset]] = None,
    by: Optional[Sequence[Feature]] = None,
    ci_level: float = 0.95,
    n_boot: int = 1000,
    progress: bool = False,
    memory_budget_mb: Optional[float] = None,
    device=None,
    store=None,
    options: Union[None, RunOptions, ReportOptions] = None,
) -> Report:
    """Loss recovered for ``h`` and its subgraphs, serial-redundancy checks, and generality.

    Args:
        h, model, data, seeds, metric, engine, baseline, n, batch_size, device: as in `scrub.evaluate`.
        leave_one_out, alone, paths: which subgraph families to include.
        paths_limit: at most this many path variants (more is an error that says so).
        subgraphs: user-named subgraphs: ``{label: [claim names]}`` (kept with their subtrees
            and links to the output) or ``{label: Hypothesis}``.
        pairs: ``"downstream"`` (pairs ``(a, b)`` with ``b`` later in the model than ``a``),
            an explicit list of claim-name pairs, or ``None`` for no redundancy checks.
        max_pairs: at most this many default pairs (the report says when it cut).
        min_effect: the smallest interaction (in loss recovered) or rise of a direct effect (in
            metric units) that is flagged; smaller ones count as additive even when significant.
            A pair is called backups (OR-like) only when removing each claim alone costs loss
            recovered (interval above zero) and removing both costs more than the sum.
        compensation: also run the knock-out / direct-effect check for each pair.
        compensation_metric: the metric of that check (default: ``metric``). Cross-entropy
            saturates, so two heads pushing the same logit look like backups even when neither
            reacts to the other; ``"target_logit"`` (linear) separates real self-repair from that.
        datasets: other datasets, by name, for the generality table.
        by: features with one value per row (e.g. ``Feature.extra("period")``): loss recovered per
            value, with CIs (`scrub.reporting.subpopulations`). Every report also shows the
            distribution of per-row recovered loss, the worst 5% of rows and a cancellation check.
        progress: show progress bars.
        memory_budget_mb: the batched engine's working-memory budget (default 4096).
        options: a `scrub.options.ReportOptions` (or a `RunOptions` for the scrub, with the report's
            own keywords) instead of the keywords it holds.

    Raises:
        ReportError: unknown claim names in ``subgraphs`` or ``pairs``; OptionsError: a bad option;
            plus anything `scrub.evaluate` raises. All before any forward pass.
    """
    run_given = dict(seeds=seeds, metric=metric, engine=engine, baseline=baseline, n=n, batch_size=batch_size,
                     ci_level=ci_level, n_boot=n_boot, progress=progress, memory_budget_mb=memory_budget_mb,
                     device=device, store=store)
    report_given = dict(leave_one_out=leave_one_out, alone=alone, paths=paths, paths_limit=paths_limit,
                        subgraphs=subgraphs, pairs=pairs, max_pairs=max_pairs, min_effect=min_effect,
                        compensation=compensation, compensation_metric=compensation_metric, datasets=datasets,
                        by=by)
    if isinstance(options, RunOptions):
        opts = ReportOptions(run=merge("report()", options, RunOptions, run_given, REPORT_DEFAULTS), **report_given)
    elif options is None:
        opts = ReportOptions(run=RunOptions(**run_given), **report_given)
    else:
        opts = merge("report()", options, ReportOptions, {**run_given, **report_given},
                     {**REPORT_DEFAULTS, **REPORT_ONLY_DEFAULTS})
    check_hypothesis(h, "report()")
    return _report(h, model, data, opts)


def _report(h: Hypothesis, model, data: Dataset, opts: ReportOptions) -> Report:
    run = opts.run
    metric = run.metric
    check_model(model, "report()")
    check_dataset(data, "report()")
    findings: list[str] = []
    variants: list[V.Variant] = []
    loo = V.leave_one_out(h)
    if opts.leave_one_out:
        variants += loo
    if opts.alone:
        variants += V.alone(h)
    if opts.paths:
        variants += V.paths(h, limit=opts.paths_limit)
    if opts.subgraphs:
        variants += V.named(h, opts.subgraphs)
    pair_list: list[tuple[str, str]] = []
    if opts.pairs == "downstream":
        pair_list, found = V.default_pairs(h, ModelShape.of(model).n_layers, opts.max_pairs)
        if found > len(pair_list):
            findings.append(f"redundancy: checked the first {len(pair_list)} of {found} downstream pairs "
                            f"(max_pairs={opts.max_pairs})")
    elif opts.pairs:
        pair_list = V.pair_names(opts.pairs, h)
    loo_by_claim = {v.claims[0]: v for v in loo}
    extra_loo = [loo_by_claim[c] for c in sorted({c for p in pair_list for c in p}) if not opts.leave_one_out]
    pair_variants = [V.without_pair(h, a, b) for a, b in pair_list]
    hyps = [h] + [v.hypothesis for v in variants] + [v.hypothesis for v in extra_loo] + pair_variants
    prepare(hyps, model, data, run, "report()")
    findings += check_by(opts.by, data, run.n)  # before any forward pass
    for ds in (opts.datasets or {}).values():
        prepare([h], model, ds, run, "report()")
    compensation_metric = opts.compensation_metric or metric
    if opts.compensation and pair_list:
        check_data_fits(model, data, compensation_metric)
    results = scrub_many(hyps, model, data, run)
    full = results[0]
    by_hyp = {id(hyp): r for hyp, r in zip(hyps, results)}
    rows = full.rows

    def combo(rs: Sequence[Result], coefs: Sequence[float]) -> Estimate:
        return lr_combination(rows.model, rows.base, [r.rows.scrub for r in rs], coefs, level=run.ci_level,
                              n_boot=run.n_boot, weights=rows.weights)

    sub_results = []
    for v in variants:
        r = by_hyp[id(v.hypothesis)]
        sub_results.append(SubgraphResult(v.kind, v.name, v.claims, r, combo([full, r], [1.0, -1.0])))
    contributions = {s.claims[0]: s.contribution for s in sub_results if s.kind == "leave-one-out"}

    joint = []
    for (a, b), pv in zip(pair_list, pair_variants):
        ra, rb, rab = (by_hyp[id(loo_by_claim[a].hypothesis)], by_hyp[id(loo_by_claim[b].hypothesis)], by_hyp[id(pv)])
        interaction = combo([ra, rb, rab, full], [1.0, 1.0, -1.0, -1.0])
        drop_a, drop_b = combo([full, ra], [1, -1]), combo([full, rb], [1, -1])
        j = JointRemoval(a, b, drop_a, drop_b, combo([full, rab], [1, -1]), interaction,
                         verdict(interaction, opts.min_effect, drop_a, drop_b))
        joint.append(j)
        finding = joint_finding(j)
        if finding:
            findings.append(finding)

    comp = []
    if opts.compensation and pair_list:
        claims = {c.name: c for c in h.claims}
        comp = _compensation(
            model, data, [(a, claims[a].component, b, claims[b].component) for a, b in pair_list],
            full, attrs.evolve(run, metric=compensation_metric), opts.min_effect,
        )
        for c in comp:
            if c.flagged:
                findings.append(
                    f"{c.b} backs up {c.a}: with {c.a}'s output resampled on every path, the direct effect "
                    f"of {c.b} rises from {c.direct_b.value:.3f} to {c.direct_b_after_knockout.value:.3f} "
                    f"({c.metric}); a single ablation of {c.a} in the model underestimates its importance "
                    f"because {c.b} compensates."
                )

    general = tuple(_generality(h, model, opts.datasets, attrs.evolve(run, progress=False)).items()) if opts.datasets else ()
    findings += _generality_findings(full, general)
    subpops = subpopulations(full, data, opts.by, n_boot=run.n_boot)
    findings += subpops.findings()
    findings += list(full.warnings)
    meta = _meta(model, data, run.seeds, metric, full, ci_level=run.ci_level, n_boot=run.n_boot,
                 datasets={name: r.dataset for name, r in general})
    return Report(
        hypothesis=h.name, full=full, subgraphs=tuple(sub_results), joint=tuple(joint), compensation=tuple(comp),
        generality=general, findings=tuple(findings), meta=meta, graph=_graph(h, contributions, ModelShape.of(model).n_layers),
        subpopulations=subpops,
    )


def _generality_findings(full: Result, general: Sequence[tuple[str, Result]]) -> list[str]:
    out = []
    for name, r in general:
        if r.ci[1] < full.ci[0]:
            out.append(
                f"specific: on {name!r} the hypothesis recovers {pct(r.loss_recovered)} "
                f"(CI up to {pct(r.ci[1])}), below {pct(full.loss_recovered)} on {full.dataset!r}"
            )
    return out


def _compensation(model, data: Dataset, pairs, full: Result, run: RunOptions, min_effect: float) -> list[Compensation]:
    """Knock ``a`` out and compare the direct effect of ``b`` with and without it, per pair
    (``run.metric`` is the check's metric; ``run.device`` where it computes).

    Per seed and chunk of reference rows, the clean logits and the random rows' clean pass are
    computed once and shared by every pair (the same random rows for all: common random numbers).
    """
    pairs = [p for p in pairs if p[1] != p[3] and not isinstance(p[1], Output) and not isinstance(p[3], Output)]
    if not pairs:
        return []
    seeds, metric, ci_level, n_boot = run.seeds, run.metric, run.ci_level, run.n_boot
    view = ModelView.from_model(model)  # post-norm models too: scrub.reporting.ablation re-normalises
    if run.device is not None:
        view = view.to(run.device)
    reference = full.rows.reference
    weights = metric.row_weights(data.rows(reference))
    tokens = data.tokens.to(view.device)
    sign = 1.0 if metric.lower_is_better else -1.0
    size = run.batch_size or 512
    keys = ("clean", "direct", "ko", "ko_direct")
    values = [{key: [] for key in keys} for _ in pairs]  # per pair: per seed [n]
    for seed in seeds:
        generator = torch.Generator().manual_seed(10_000 + int(seed))
        random_rows = torch.randint(len(data), (len(reference),), generator=generator)
        parts = [{key: [] for key in keys} for _ in pairs]
        for start in range(0, len(reference), size):
            ref = reference[start : start + size]
            batch = data.rows(ref)
            toks = tokens[ref.to(view.device)]
            random = view.clean_pass(tokens[random_rows[start : start + size].to(view.device)])
            clean = view.forward(toks)
            clean_value = sign * metric(clean, batch, clean).cpu()
            for (_, a, _, b), part in zip(pairs, parts):
                part["clean"].append(clean_value)
                for key, kwargs in (("direct", {"direct": b}), ("ko", {"knock_out": a}),
                                    ("ko_direct", {"knock_out": a, "direct": b})):
                    logits = ablated_logits(view, toks, random, **kwargs)
                    part[key].append(sign * metric(logits, batch, clean).cpu())
        for value, part in zip(values, parts):
            for key in keys:
                value[key].append(torch.cat(part[key]))
    out = []
    for (a_name, _, b_name, _), value in zip(pairs, values):
        v = {key: torch.stack(x) for key, x in value.items()}  # [seeds, n]
        kw = dict(level=ci_level, n_boot=n_boot, weights=weights)
        direct_b = mean_difference(v["direct"], v["clean"], **kw)
        after = mean_difference(v["ko_direct"], v["ko"], **kw)
        rise = mean_difference(v["ko_direct"] - v["ko"], v["direct"] - v["clean"], **kw)
        flagged = rise.excludes_zero() and rise.value >= min_effect
        out.append(Compensation(a_name, b_name, direct_b, after, rise, flagged, metric.name))
    return out


def generality(
    h: Hypothesis,
    model,
    datasets: Mapping[str, Dataset],
    *,
    options: Optional[RunOptions] = None,
    **keywords,
) -> dict[str, Result]:
    """The same hypothesis on several named datasets (keywords or ``options`` as in `scrub.evaluate`).

    The hypothesis, the model, every dataset and the options are checked before the first forward pass."""
    defaults = {**REPORT_DEFAULTS, "seeds": 1}
    unknown = sorted(set(keywords) - set(defaults))
    if unknown:
        raise ReportError(f"generality(): unknown options {unknown}; the options are those of scrub.evaluate: "
                          f"{sorted(defaults)}")
    opts = merge("generality()", options, RunOptions, keywords, defaults)
    check_hypothesis(h, "generality()")
    check_model(model, "generality()")
    if not isinstance(datasets, Mapping) or not datasets:
        raise ReportError("generality(): give at least one dataset, as {name: Dataset}")
    for name, ds in datasets.items():
        if not isinstance(ds, Dataset):
            raise ReportError(f"generality(): datasets[{name!r}] is {type(ds).__name__}, not a scrub.Dataset")
        prepare([h], model, ds, opts, "generality()")
    return _generality(h, model, datasets, opts)


def _generality(h: Hypothesis, model, datasets: Mapping[str, Dataset], opts: RunOptions) -> dict[str, Result]:
    return {name: scrub_many([h], model, ds, opts)[0] for name, ds in datasets.items()}


def paired_differences(results: Sequence[Result], ci_level: float, n_boot: int) -> list[PairedDifference]:
    """The paired difference in loss recovered of every pair of ``results`` (scrubbed on the same
    rows, seeds and baseline), with an order stated only where its interval excludes zero."""
    first = results[0]
    diffs = []
    for i in range(len(results)):
        for j in range(i + 1, len(results)):
            a, b = results[i], results[j]
            d = lr_combination(first.rows.model, first.rows.base, [a.rows.scrub, b.rows.scrub], [1.0, -1.0],
                               level=ci_level, n_boot=n_boot, weights=first.rows.weights)
            if d.excludes_zero():
                verdict = f"{a.hypothesis} > {b.hypothesis}" if d.value > 0 else f"{b.hypothesis} > {a.hypothesis}"
            else:
                verdict = "no significant difference"
            diffs.append(PairedDifference(a.hypothesis, b.hypothesis, d, verdict))
    return diffs


def compare(
    hypotheses: Sequence[Hypothesis],
    model,
    data: Dataset,
    *,
    seeds: Union[int, Sequence[int]] = 2,
    metric: Union[None, str, Metric, Callable] = None,
    engine: Optional[str] = None,
    baseline: Optional[Hypothesis] = None,
    n: Optional[int] = None,
    batch_size: Optional[int] = None,
    ci_level: float = 0.95,
    n_boot: int = 1000,
    progress: bool = False,
    memory_budget_mb: Optional[float] = None,
    device=None,
    store=None,
    options: Optional[RunOptions] = None,
) -> Comparison:
    """Several hypotheses on the same reference rows and seeds (common random numbers), with the
    paired difference of every pair; an order is stated only where its interval excludes zero.
    Options (keywords or ``options``) as in `scrub.evaluate`.

    Raises:
        ReportError: fewer than two hypotheses, duplicate names, or (a bug) results that do not
            share rows, seeds and baseline values.
    """
    given = dict(seeds=seeds, metric=metric, engine=engine, baseline=baseline, n=n, batch_size=batch_size,
                 ci_level=ci_level, n_boot=n_boot, progress=progress, memory_budget_mb=memory_budget_mb, device=device,
                 store=store)
    opts = merge("compare()", options, RunOptions, given, REPORT_DEFAULTS)
    if isinstance(hypotheses, (Hypothesis, str)) or not isinstance(hypotheses, Sequence):
        raise ReportError(f"compare() needs a list of at least two hypotheses, got {type(hypotheses).__name__}")
    if len(hypotheses) < 2:
        raise ReportError(f"compare() needs at least two hypotheses, got {len(hypotheses)}")
    for i, h in enumerate(hypotheses):
        check_hypothesis(h, "compare()", f"hypotheses[{i}]")
    names = [h.name for h in hypotheses]
    if len(set(names)) != len(names):
        raise ReportError(f"compare(): hypothesis names must be distinct to label the results, got {names}")
    results = evaluate_many(list(hypotheses), model, data, options=opts)
    ci_level, n_boot = opts.ci_level, opts.n_boot
    first = results[0]
    for r in results[1:]:
        same = (
            r.seeds == first.seeds
            and torch.equal(r.rows.reference, first.rows.reference)
            and torch.equal(r.rows.base, first.rows.base)
            and torch.equal(r.rows.model, first.rows.model)
        )
        if not same:
            raise ReportError(
                f"compare(): {r.hypothesis!r} was not scrubbed on the same rows, seeds and baseline as "
                f"{first.hypothesis!r}; paired differences would be invalid (please report this bug)"
            )
    diffs = paired_differences(results, ci_level, n_boot)
    meta = _meta(model, data, first.seeds, opts.metric, first, ci_level=ci_level, n_boot=n_boot,
                 common_random_numbers=True)
    return Comparison(results=tuple(results), differences=tuple(diffs), meta=meta)
