"""The serial-redundancy checks of `scrub.report` on hand-built models whose answer is known.

See `known_models` for the constructions. In short: two previous-token copy heads that each add
``GAIN`` to the right logit are an OR (either alone drives the loss to ~0; cross-entropy saturates);
the same heads working at disjoint positions are exactly additive; a previous-token head feeding
the key of an induction head is an AND. A head with ``W_O = 0`` is claimed everywhere as a claim
the model provably does not use.
"""

from __future__ import annotations

import math

import pytest

import scrub
from known_models import GAIN, independent, induction_and, redundant, self_repair, single

pytestmark = pytest.mark.requires_hooked  # the known models are HookedTransformers

SEEDS = 2
N = 128


def _report(k, **options):
    kwargs = dict(seeds=SEEDS, n=N, pairs=[k.pair], leave_one_out=True, alone=False, paths=False)
    kwargs.update(options)
    return scrub.report(k.hypothesis, k.model, k.data, **kwargs)


@pytest.fixture(scope="module")
def known():
    return {"redundant": redundant(), "independent": independent(), "single": single(), "and": induction_and(),
            "self_repair": self_repair()}


@pytest.fixture(scope="module")
def reports(known):
    return {name: _report(k) for name, k in known.items()}


def _loo(rep, claim):
    (s,) = [s for s in rep.subgraphs if s.kind == "leave-one-out" and s.claims == (claim,)]
    return s


# ---- the constructions do what they claim -----------------------------------------------------


@pytest.mark.parametrize("name", ["redundant", "independent", "single", "self_repair"])
def test_copy_models_solve_the_task(known, reports, name):
    k = known[name]
    logits = k.model(k.data.tokens)
    assert float(scrub.metrics.accuracy()(logits, k.data).min()) == 1.0
    assert float(scrub.metrics.cross_entropy()(logits, k.data).max()) < 1e-6
    assert reports[name].full.m_model < 1e-6


@pytest.mark.parametrize("name", ["redundant", "independent", "single", "and", "self_repair"])
def test_the_true_hypothesis_recovers_everything(reports, name):
    full = reports[name].full
    assert full.loss_recovered == pytest.approx(1.0, abs=1e-6)
    assert full.m_base > 10  # the baseline is confidently wrong: the ratio is well defined


# ---- OR-like: two exactly redundant heads -----------------------------------------------------


def _exact_single_drop(gain: float, vocab: int = 10) -> float:
    """drop(A) = drop(B) in the redundant model with this gain, from the logits alone.

    At a scored position whose resampled row has a wrong previous token (elsewhere all variants
    score the same and cancel), the right token's logit is 2g in the model, g with one head
    resampled (the resampled head puts g on the wrong token) and 0 in the baseline (both heads
    come from the same random row: 2g on one wrong token); the other ``vocab`` logits (the wrong
    tokens and BOS) are 0.
    """
    others = vocab  # logits at 0 besides the right token (and, when resampled, the wrong one)
    model = math.log(math.exp(2 * gain) + others) - 2 * gain
    one = math.log(2 * math.exp(gain) + others - 1) - gain
    base = math.log(math.exp(2 * gain) + others)
    return (one - model) / (base - model)


def test_redundant_heads_are_or_like(reports):
    (j,) = reports["redundant"].joint
    assert (j.a, j.b) == ("A", "B")
    assert j.verdict == "OR-like (backup)"
    assert j.interaction.ci[0] > 0.9
    # Known values: one head resampled leaves the right and a wrong token tied at GAIN (~log 2
    # nats); both resampled is the baseline (2 * GAIN nats).
    single_drop = _exact_single_drop(GAIN)
    assert single_drop == pytest.approx(math.log(2) / (2 * GAIN), rel=1e-6)
    assert j.drop_a.value == pytest.approx(single_drop, rel=1e-4)
    assert j.drop_b.value == pytest.approx(single_drop, rel=1e-4)
    assert j.drop_ab.value == pytest.approx(1.0, abs=1e-6)
    assert j.interaction.value == pytest.approx(1.0 - 2 * single_drop, rel=1e-4)


@pytest.mark.parametrize("gain", [1.0, 4.0])
def test_redundant_drops_match_the_logits_at_any_gain(gain):
    # The interaction grows with the gain as cross-entropy saturates (0.19 at gain 1, 0.81 at 4).
    (j,) = _report(redundant(gain=gain), compensation=False).joint
    single_drop = _exact_single_drop(gain)
    assert j.drop_a.value == pytest.approx(single_drop, rel=1e-4)
    assert j.drop_b.value == pytest.approx(single_drop, rel=1e-4)
    assert j.interaction.value == pytest.approx(1.0 - 2 * single_drop, rel=1e-4)


def test_redundant_backup_compensates(reports):
    rep = reports["redundant"]
    (c,) = rep.compensation
    assert (c.a, c.b) == ("A", "B")
    assert c.flagged
    assert c.rise.ci[0] > 10
    # B's direct path costs ~log 2 nats while A works, ~2 * GAIN - log 2 with A knocked out
    # (on the ~90% of positions where the random row's token is wrong).
    assert 0.3 < c.direct_b.value < math.log(2)
    assert c.direct_b_after_knockout.value > 0.75 * (2 * GAIN - math.log(2))


def test_report_says_the_backup_in_words(reports):
    text = "\n".join(reports["redundant"].findings)
    assert "A and B back each other up (OR-like)" in text
    assert "a single-claim ablation underestimates how much each matters" in text
    assert "B backs up A" in text and "B compensates" in text
    assert "AND-like" not in text


def test_default_pairs_flag_only_the_real_backup(known):
    # pairs="downstream" also proposes (Z, B): Z writes nothing, so only (A, B) may be flagged.
    rep = _report(known["redundant"], pairs="downstream")
    verdicts = {(j.a, j.b): j.verdict for j in rep.joint}
    assert verdicts == {("A", "B"): "OR-like (backup)", ("Z", "B"): "additive"}
    flagged = {(c.a, c.b): c.flagged for c in rep.compensation}
    assert flagged == {("A", "B"): True, ("Z", "B"): False}
    zb = [j for j in rep.joint if j.a == "Z"][0]
    assert abs(zb.interaction.value) < 1e-6


# ---- a backup that reads the head it backs up (IOI-style self-repair) ------------------------


def test_self_repair_is_caught_by_the_compensation_check(reports):
    rep = reports["self_repair"]
    (c,) = rep.compensation
    assert c.flagged
    assert abs(c.direct_b.value) < 1e-6  # B writes nothing while A works ...
    assert c.direct_b_after_knockout.value > 0.75 * (GAIN - math.log(2))  # ... and does A's job without A
    assert "B backs up A" in "\n".join(rep.findings)


def test_self_repair_is_found_by_compensation_not_by_joint_removal(reports):
    """Joint removal follows the hypothesis: removing claim A resamples only A's edge into the
    output, and B (an EXACT leaf) still sees A on the reference, so B never switches on and the
    pair reads as additive. Self-repair through B's inputs is what the compensation check, which
    knocks A out on every path, is for: it must flag it."""
    (j,) = reports["self_repair"].joint
    assert j.verdict == "additive" and abs(j.interaction.value) < 1e-6
    (c,) = reports["self_repair"].compensation
    assert c.flagged and c.rise.excludes_zero() and c.rise.value > 0.75 * GAIN
    assert any("backs up" in f for f in reports["self_repair"].findings)


def target_logit_loss(logits, batch):
    """Minus the target's logit, averaged over scored positions: linear in the final residual."""
    right = logits.gather(-1, batch.targets.clamp(min=0)[..., None])[..., 0]  # [n, pos]
    mask = batch.loss_mask.to(right.dtype)
    return -(right * mask).sum(1) / mask.sum(1)


def test_a_linear_metric_tells_self_repair_from_saturation(known):
    # With a metric linear in the logits nothing saturates: the redundant heads' direct effects
    # add up (no rise), while the self-repairing B really changes what it writes (a rise of ~GAIN).
    redundant_rep, repair_rep = (_report(known[name], metric=target_logit_loss) for name in ("redundant", "self_repair"))
    (c,) = redundant_rep.compensation
    assert not c.flagged and abs(c.rise.value) < 1e-4
    assert c.direct_b.value > 0.75 * GAIN
    (j,) = redundant_rep.joint
    assert j.verdict == "additive" and abs(j.interaction.value) < 1e-4
    (c,) = repair_rep.compensation
    assert c.flagged and c.rise.value > 0.75 * GAIN


# ---- additive: independent heads -----------------------------------------------------------


def test_independent_heads_are_additive(reports):
    (j,) = reports["independent"].joint
    assert j.verdict == "additive"
    assert not j.flagged
    # Each head serves half of the scored positions: the row loss is a sum of separate terms.
    assert j.drop_a.value == pytest.approx(0.5, abs=0.02)
    assert j.drop_b.value == pytest.approx(0.5, abs=0.02)
    assert j.drop_ab.value == pytest.approx(1.0, abs=1e-6)
    assert abs(j.interaction.value) < 1e-6
    assert j.interaction.ci[0] - 1e-6 <= 0 <= j.interaction.ci[1] + 1e-6


def test_independent_heads_do_not_compensate(reports):
    rep = reports["independent"]
    (c,) = rep.compensation
    assert not c.flagged
    assert c.direct_b.value > 1  # B matters directly ...
    assert abs(c.rise.value) < 1e-5  # ... and just as much with A knocked out
    assert c.direct_b_after_knockout.value == pytest.approx(c.direct_b.value, abs=1e-5)
    text = "\n".join(rep.findings)
    assert "back each other up" not in text and "backs up" not in text and "AND-like" not in text


# ---- AND-like: a previous-token head feeding an induction head's key -----------------------


def test_induction_circuit_is_and_like(reports):
    rep = reports["and"]
    (j,) = rep.joint
    assert j.verdict == "AND-like"
    assert j.interaction.ci[1] < -0.03  # measured: -0.12 [-0.19, -0.05] (n=128, 2 seeds)
    # B needs both its key (from A) and its query/value (the tokens): removing either breaks it,
    # so removing both costs no more than removing the tokens.
    assert j.drop_ab.value == pytest.approx(1.0, abs=0.05)
    assert j.drop_a.value > 0.3 and j.drop_b.value > 0.3
    (c,) = rep.compensation
    assert not c.flagged  # A writes nothing the unembedding reads: no direct effect to rise
    assert any("tokens and A are AND-like" in f for f in rep.findings)


def test_a_pair_where_one_feeds_the_other_is_refused(known):
    k = known["and"]
    with pytest.raises(scrub.ReportError, match="one feeds the other"):
        scrub.report(k.hypothesis, k.model, k.data, n=16, seeds=1, pairs=[("A", "B")], alone=False, paths=False)


# ---- leave-one-out on known answers ---------------------------------------------------------


@pytest.mark.parametrize("name", ["redundant", "independent", "single", "and", "self_repair"])
def test_unused_head_contributes_nothing(reports, name):
    rep = reports[name]
    z = _loo(rep, "Z")
    assert abs(z.contribution.value) < 1e-6
    assert max(abs(x) for x in z.contribution.ci) < 1e-6
    assert z.result.loss_recovered == pytest.approx(rep.full.loss_recovered, abs=1e-6)


def test_removing_the_only_claim_that_matters_gives_the_baseline(reports):
    a = _loo(reports["single"], "A")
    assert a.result.loss_recovered == pytest.approx(0.0, abs=1e-6)
    assert a.contribution.value == pytest.approx(1.0, abs=1e-6)
    b = _loo(reports["and"], "B")  # A and the token claims only feed B
    assert b.result.loss_recovered == pytest.approx(0.0, abs=1e-6)


def test_reference_engine_agrees_on_the_redundant_model(known, reports):
    rep = _report(known["redundant"], engine="reference", n=32, compensation=False)
    (j,) = rep.joint
    assert j.verdict == "OR-like (backup)"
    assert j.drop_a.value == pytest.approx(reports["redundant"].joint[0].drop_a.value, rel=1e-3)
    assert j.drop_ab.value == pytest.approx(1.0, abs=1e-6)
