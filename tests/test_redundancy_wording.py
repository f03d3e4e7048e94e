"""The joint-removal verdict and finding follow the signs of the estimates (constructed here): a
pair is called backups (OR-like) only when each single removal costs loss recovered beyond noise
and removing both costs more than the sum; otherwise the words say what happened."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scrub.metrics import Estimate
from scrub.reporting.wording import joint_finding, verdict as _verdict
from scrub.reporting.results import JointRemoval


def est(value: float, half: float = 0.01) -> Estimate:
    return Estimate(value=value, stderr=half / 2, ci=(value - half, value + half))


def joint(a: float, b: float, ab: float, half: float = 0.01, min_effect: float = 0.02) -> JointRemoval:
    drop_a, drop_b, drop_ab = est(a, half), est(b, half), est(ab, half)
    interaction = est(ab - a - b, half)
    return JointRemoval("A", "B", drop_a, drop_b, drop_ab, interaction, _verdict(interaction, min_effect, drop_a, drop_b))


def test_backup_when_each_removal_costs_and_both_cost_more():
    j = joint(0.05, 0.04, 0.60)
    assert j.verdict == "OR-like (backup)"
    text = joint_finding(j)
    assert text.startswith("A and B back each other up (OR-like)") and "5.0% + 4.0%" in text


def test_removals_that_raise_loss_recovered_are_not_backups():
    """The case a user met: removing either claim RAISED loss recovered (negative drops)."""
    j = joint(-0.10, -0.08, 0.05)
    assert j.interaction.value > 0 and j.interaction.excludes_zero()
    assert j.verdict == "super-additive"
    text = joint_finding(j)
    assert "back each other up" not in text and "OR-like" not in text and "backup" not in text
    assert "removing A raises loss recovered by 10.0%" in text
    assert "removing B raises loss recovered by 8.0%" in text
    assert "removing both costs 5.0%" in text
    assert "23.0% above the sum of the single drops" in text


def test_one_removal_within_noise_is_not_a_backup():
    j = joint(0.003, 0.05, 0.40, half=0.01)  # A's drop interval straddles zero
    assert j.verdict == "super-additive"
    text = joint_finding(j)
    assert "removing A makes no clear difference" in text and "removing B costs 5.0%" in text
    assert "backup" not in text and "No mechanism is named" in text


def test_and_like_needs_costly_single_removals_too():
    assert joint(0.50, 0.45, 0.60).verdict == "AND-like"
    assert "each needs the other" in joint_finding(joint(0.50, 0.45, 0.60))
    j = joint(0.30, -0.20, -0.10)  # sub-additive, but removing B raises loss recovered
    assert j.verdict == "sub-additive"
    text = joint_finding(j)
    assert "AND-like" not in text and "needs the other" not in text
    assert "removing both raises loss recovered by 10.0%" in text and "below the sum" in text


@pytest.mark.parametrize("a, b, ab", [(0.05, 0.04, 0.095), (0.05, 0.04, 0.10), (-0.1, -0.1, -0.2)])
def test_additive_pairs_get_no_finding(a, b, ab):
    j = joint(a, b, ab)
    assert j.verdict == "additive" and joint_finding(j) is None


def test_small_interactions_are_additive_even_when_significant():
    j = joint(0.05, 0.04, 0.10, half=0.001)  # interaction 0.01 < min_effect 0.02
    assert j.verdict == "additive"


finite = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(a=finite, b=finite, ab=finite, half=st.floats(min_value=0.0, max_value=0.2))
def test_words_follow_the_signs(a, b, ab, half):
    j = joint(a, b, ab, half=half)
    text = joint_finding(j) or ""
    each_costs = all(d.value > 0 and d.ci[0] > 0 for d in (j.drop_a, j.drop_b))
    if "back each other up" in text or j.verdict.startswith("OR"):
        assert each_costs and j.interaction.value > 0 and j.interaction.ci[0] > 0
    if "AND-like" in text or j.verdict == "AND-like":
        assert each_costs and j.interaction.value < 0 and j.interaction.ci[1] < 0
    for name, drop in (("A", j.drop_a), ("B", j.drop_b)):
        if f"removing {name} raises" in text:
            assert drop.ci[1] < 0
        if f"removing {name} costs" in text:
            assert drop.ci[0] > 0
