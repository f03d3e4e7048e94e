"""The words of the redundancy findings: a joint removal's verdict and its sentence.

Words follow the signs of the estimates: a pair is called backups (OR-like) or AND-like only when
removing each claim alone clearly costs loss recovered; any other clear interaction is told as it
happened, without naming a mechanism.
"""

from __future__ import annotations

from typing import Optional

from scrub.metrics import Estimate
from scrub.reporting.results import JointRemoval
from scrub.reporting.terminal import pct

__all__ = ["verdict", "joint_finding"]


def verdict(interaction: Estimate, min_effect: float, drop_a: Optional[Estimate] = None,
             drop_b: Optional[Estimate] = None) -> str:
    """The joint-removal verdict, in words that follow the signs.

    ``"additive"`` unless the interaction's interval excludes zero and it is not negligible. A clear
    super-additive interaction is ``"OR-like (backup)"`` only when removing each claim alone clearly
    costs loss recovered (given ``drop_a`` and ``drop_b``), else ``"super-additive"``; likewise
    ``"AND-like"`` or ``"sub-additive"``.
    """
    if not interaction.excludes_zero() or abs(interaction.value) < min_effect:
        return "additive"
    each_costs = drop_a is None or drop_b is None or (_costs(drop_a) and _costs(drop_b))
    if interaction.value > 0:
        return "OR-like (backup)" if each_costs else "super-additive"
    return "AND-like" if each_costs else "sub-additive"


def _costs(drop: Estimate) -> bool:
    """Whether removing claims costs loss recovered beyond noise (the drop's interval is above zero).

    A backup's single removal may cost little (its partner covers for it), so no minimum size."""
    return drop.value > 0 and drop.ci[0] > 0


def _raises(drop: Estimate) -> bool:
    """Whether removing claims raises loss recovered beyond noise (the drop's interval is below zero)."""
    return drop.value < 0 and drop.ci[1] < 0


def _removal(name: str, drop: Estimate) -> str:
    """What removing ``name`` did, in words that follow the sign of the drop."""
    if _costs(drop):
        return f"removing {name} costs {pct(drop.value)}"
    if _raises(drop):
        return f"removing {name} raises loss recovered by {pct(-drop.value)}"
    return f"removing {name} makes no clear difference ({pct(-drop.value)} change)"


def joint_finding(j: JointRemoval) -> Optional[str]:
    """The finding for one joint removal, or None when there is nothing to say.

    The verdict (`verdict`) calls the pair backups (OR-like) only when removing each claim alone
    costs loss recovered (a drop whose interval lies above zero) and
    removing both costs more than the sum; AND-like only when each single removal costs and the
    joint one costs less than the sum. A clear interaction otherwise is told as it happened."""
    if j.verdict == "additive":
        return None
    a, b = j.a, j.b
    if j.verdict.startswith("OR"):
        return (
            f"{a} and {b} back each other up (OR-like): removing both costs {pct(j.drop_ab.value)} of loss "
            f"recovered, more than the sum of removing each ({pct(j.drop_a.value)} + {pct(j.drop_b.value)}); "
            f"a single-claim ablation underestimates how much each matters."
        )
    if j.verdict == "AND-like":
        return (
            f"{a} and {b} are AND-like: removing both costs less ({pct(j.drop_ab.value)}) than the sum of "
            f"removing each ({pct(j.drop_a.value)} + {pct(j.drop_b.value)}); each needs the other."
        )
    # a clear interaction, but the single removals do not both cost: say what happened, no mechanism
    relation = "above" if j.interaction.value > 0 else "below"
    return (
        f"{a} and {b} do not add up: {_removal('both', j.drop_ab)}; {_removal(a, j.drop_a)}; "
        f"{_removal(b, j.drop_b)}. The joint drop in loss recovered ({pct(j.drop_ab.value)}) is "
        f"{pct(abs(j.interaction.value))} {relation} the sum of the single drops ({pct(j.drop_a.value)} + "
        f"{pct(j.drop_b.value)}). No mechanism is named: that needs each removal alone to cost loss recovered."
    )
