"""Paren-balance hypotheses for the zoo model ``parens-3l``: Redwood's experiments, on our model.

Source: Redwood Research, "Causal scrubbing: results on a paren balance checker" (Chan et al.
2022, https://www.lesswrong.com/s/h95ayYYwMebGEYN5y/p/kjudfaQazMmC74SbF), and their reproduction
in REMIX day 4 (``redwoodresearch/remix_public``, ``remix_d4_part2_*``), whose correspondences these
hypotheses follow claim for claim where our API can express them. Redwood's model and ours have
the same shape (3 layers of 2 heads, d_model 56, ReLU MLPs, LayerNorm, bidirectional, class at
position 0) but were trained separately, so the heads' roles had to be found again. Our model
also has no attention padding mask (Redwood's does): it must learn to ignore [PAD] itself.

HEAD MAPPING (measured by ``python -m scrub.zoo.train``; every number is in
``scrub/zoo/weights/parens-3l.json``, ``heads``, on ``parens(n=2048, seed=12345)``)

- The read-out is the unembedding AND the last MLP at position 0. Resampling only MLP 2's direct
  path costs 1.59 nats (model 0.009, baseline 3.27); resampling any single head's direct path
  costs at most 0.08. The heads feed MLP 2, which writes the class: Redwood's "direct paths" for
  this model are head -> output and head -> MLP 2 -> output (`_direct`; each head is claimed into
  both, and everything else that enters either is resampled). Redwood's literal version, with
  MLP 2 resampled, is `exp1a_literal` (42%).
- Roles: with every layer >= 1 head exact into that read-out but one, which instead carries a
  single feature, the loss is lowest for (loss with all four exact: 0.877):

  ===========  =========  ============  ========  =============
  head         count      count&open    horizon   prefix hor.
  ===========  =========  ============  ========  =============
  1.0          1.156      1.041         **0.846** 1.073
  1.1          1.325      1.149         **0.813** 1.204
  2.0          1.442      1.226         1.565     **0.889**
  2.1          0.946      **0.826**     0.975     1.101
  ===========  =========  ============  ========  =============

  so **2.1 carries the count test** (with starts-open; Redwood: 1.0 and 2.0), **1.0 and 1.1
  carry the horizon test** (suffix form, Redwood's; Redwood: 2.1), and **2.0 carries the prefix
  form** of the horizon test ("no prefix closes more than it opens"), a role Redwood's model has
  no head for (``prefix_horizon_test`` AND ``horizon_test`` is also exactly "balanced").
  Supporting numbers: the share of the variance of each head's output at position 0 explained
  by a feature (eta^2): 2.1 count&open 0.45, count 0.32; 1.1 horizon 0.36; 1.0 horizon 0.17;
  2.0 prefix horizon 0.36. Direct logit attribution at position 0 (balanced / count failures /
  horizon-only failures): 2.1 +1.62 / -0.50 / +0.34, 2.0 +2.31 / -0.53 / +0.29, 1.1 +0.64 / -0.29
  / -0.61, 1.0 +0.42 / -0.14 / -0.32 (small next to MLP 2, hence the read-out above). With
  Redwood's own head numbers (1.0, 2.0 count; 2.1 horizon) the same read-out recovers 41%
  (`exp1a_redwood_heads`) against 76% for ours (`exp1a`).
- Unlike Redwood's count heads, 2.1 does not read position 1: from position 0 it puts 2% of its
  attention on position 1, 55% on the parentheses and 40% on [PAD]. No layer-0 head writes the
  open proportion p cleanly: at position 1 the R^2 of a linear fit of p by the head's output is
  0.43 (0.0) and 0.54 (0.1), so ``P_HEAD`` = 0.1 is only the better of two weak candidates.
  Redwood's experiment-2 claims are therefore tested here as stated, as claims that may fail.

RESULTS (``scrub.evaluate(h, model(), dataset(), n=1024, seeds=2)``; model loss 0.0032, baseline
3.106; loss recovered +- SE; Redwood's from the post / REMIX)

  ==========================================  ==============  =================
  experiment                                  ours            Redwood
  ==========================================  ==============  =================
  1a literal (MLP 2 resampled)                41.8 +- 1.6%    --
  1a with Redwood's head numbers              41.1 +- 2.3%    --
  1a  count / horizon / prefix                75.6 +- 1.4%    ~88% (loss 0.52)
  1b  count&open                              78.5 +- 1.3%    ~93% (0.30)
  2a  count head reads pos 1: p-head + embeds 72.0 +- 1.5%    ~87% (0.55)
  2b  as 2a, p-head ~ phi(p) (see below)      70.8 +- 1.5%    ~88% (0.53)
  3a  horizon heads' input split by position  72.4 +- 1.5%    ~1.12-1.23 loss
  4   combined (2b + 3a)                      62.4 +- 1.8%    72% (1.22); REMIX ~1.64-1.7
  ==========================================  ==============  =================

WHAT DIFFERS FROM REDWOOD'S CORRESPONDENCES, AND WHY

- 2b: Redwood rewrite 0.0's output as phi(p) = v(2p - 1) plus a residual, and resample the
  residual. `scrub` has no component rewrites, so 2b here keeps 2a and claims instead what phi
  assumes about the p-head's computation (`_phi`): its values read the exact tokens, its keys
  only where the parentheses are ("(" and ")" interchangeable, per position) and its queries are
  resampled, i.e. it averages per-token values over the parentheses. That is a claim about how
  the output is made, not that only its v-direction matters; the two can differ.
- Shared data: rust_circuit gives one datum to a whole interp node ("the input of 1.0 at
  position 1", "the embeddings"), shared by every path it matches and by q, k and v. `scrub`
  treeifies every path and port, so each claim below draws its own row (all agreeing on the
  same feature with the same parent): stricter than Redwood's, never looser.
- Experiment 3 uses the raw suffix proportion (Redwood's 3a; their 3b adjusts it by 0.0's
  attention) and needs no padding-mask node (our model has no mask; ``horizon_at`` keeps [PAD]
  and [END] in their own classes). Experiment 4 is 2b + 3a here, 2b + 3b in Redwood's.
- 2.0 (prefix head) keeps its 1a claim in every experiment.

Run: ``scrub run hypotheses/parens.py``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

import scrub
from scrub import EXACT, MLP, Embed, Feature, Head, Hypothesis
from scrub.hypothesis import Claim
from scrub.tasks.parens import CLOSE, OPEN
from scrub.tasks.parens import features as _task_features

N_LAYERS = 3
COUNT_HEADS = (Head(2, 1),)  # carry the count test (Redwood: 1.0 and 2.0)
HORIZON_HEADS = (Head(1, 0), Head(1, 1))  # carry the horizon test (Redwood: 2.1)
PREFIX_HEAD = Head(2, 0)  # carries the prefix form of the horizon test (no counterpart in Redwood's)
P_HEAD = Head(0, 1)  # the layer-0 head most tied to the open proportion p (Redwood: 0.0)
READ_POS = 1  # the position of the count heads' input that Redwood's 2a keeps (Redwood: 1)
READOUT_MLP = MLP(2)  # part of the read-out: it turns the heads' outputs at position 0 into the class

F = _task_features()
#: The token at each position with "(" and ")" merged: where the parentheses are, not which.
PAREN_OR_TOKEN = Feature(
    "paren_or_token", lambda d: torch.where(d.tokens == CLOSE, torch.full_like(d.tokens, OPEN), d.tokens)
)


def model():
    """The zoo model these hypotheses describe."""
    return scrub.zoo.load("parens-3l")


def dataset(n: int = 4096, seed: int = 0):
    """The task distribution: strings of 2-40 parentheses, about a quarter balanced."""
    return scrub.tasks.parens(n=n, seed=seed)


# ---- building blocks ------------------------------------------------------------------------------


def _writers(component) -> list:
    """The components that write into ``component``'s input (the positional embedding, the same
    for every row, is left out: resampling it changes nothing)."""
    layer = component.layer
    out: list = [Embed()]
    for l in range(layer + (1 if isinstance(component, MLP) else 0)):
        out.append(Head(l, 0))
        out.append(Head(l, 1))
        if l < layer:
            out.append(MLP(l))
    return out


def _direct(
    name: str,
    count_feature: Feature,
    readout_mlp: bool = True,
    count_heads: Sequence[Head] = COUNT_HEADS,
    horizon_heads: Sequence[Head] = HORIZON_HEADS,
    prefix_head: Optional[Head] = PREFIX_HEAD,
) -> tuple[Hypothesis, list[Claim], list[Claim]]:
    """Experiment 1: the count heads', the horizon heads' and the prefix head's paths into the
    read-out carry ``count_feature``, the horizon test and the prefix horizon test.

    The read-out is the unembedding and (``readout_mlp``) the last MLP at position 0, an
    intermediate claim (EXACT: it runs on the reference row) whose inputs are the same heads;
    every other input of the output and of that MLP is resampled (from one random row each).
    Each head feeds both (two paths, sampled independently). Returns the hypothesis, the count
    head claims and the horizon head claims (every copy).
    """
    h = Hypothesis(name)
    out = h.output()
    parents = [out]
    if readout_mlp:
        parents.append(h.claim(READOUT_MLP, EXACT, into=out, name=str(READOUT_MLP)))
    counts, horizons = [], []
    for parent in parents:
        where = "" if parent is out else f"->{parent.name}"
        counts += [h.claim(c, count_feature, into=parent, name=f"{c}{where}") for c in count_heads]
        horizons += [h.claim(c, F["horizon_test"], into=parent, name=f"{c}{where}") for c in horizon_heads]
        if prefix_head is not None:
            h.claim(prefix_head, F["prefix_horizon_test"], into=parent, name=f"{prefix_head}{where}")
    return h, counts, horizons


def _from_p_and_embeddings(
    h: Hypothesis, parent: Claim, port: str, positions: Optional[Sequence[int]], phi: bool
) -> None:
    """Claim that ``parent``'s input through ``port`` (at ``positions``) is computed from only
    the p-head's output at ``READ_POS`` (which carries ``p1_if_starts_open``) and the embeddings
    (which carry ``starts_open``); everything else upstream comes from other (random) rows.

    Layer-0 heads other than the p-head read only embeddings, so they are leaves carrying
    ``starts_open``. MLPs and later heads are intermediate claims (EXACT: their datum is the
    parent's) whose own inputs are claimed the same way, recursively (an MLP at the same
    positions, a head at every position, since it reads them all).
    """
    for w in _writers(parent.component):
        name = f"{parent.name}.{port}<-{w}"
        if isinstance(w, Embed):
            h.claim(w, F["starts_open"], into=(parent, port), positions=positions, name=name)
        elif w == P_HEAD:
            node = h.claim(w, F["p1_if_starts_open"], into=(parent, port), positions=[READ_POS], name=name)
            if phi:
                _phi(h, node)
        elif isinstance(w, Head) and w.layer == 0:
            h.claim(w, F["starts_open"], into=(parent, port), positions=positions, name=name)
        else:
            node = h.claim(w, EXACT, into=(parent, port), positions=positions, name=name)
            below = positions if isinstance(w, MLP) else None
            for p in w.ports:
                _from_p_and_embeddings(h, node, p, below, phi)


def _phi(h: Hypothesis, p_node: Claim) -> None:
    """The p-head's output is phi(p): an average of per-token values over the parentheses.

    Its values read the exact tokens; its keys only where the parentheses are (each key
    position is drawn from a row with a parenthesis there iff the reference has one, "(" and ")"
    interchangeable); its queries are resampled from a random row.
    """
    h.claim(Embed(), EXACT, into=(p_node, "v"), name=f"{p_node.name}.v<-Embed")
    h.claim(Embed(), PAREN_OR_TOKEN, into=(p_node, "k"), name=f"{p_node.name}.k<-Embed")


def _count_heads_from_read_pos(h: Hypothesis, counts: list[Claim], phi: bool) -> None:
    for c in counts:
        for port in c.component.ports:
            _from_p_and_embeddings(h, c, port, [READ_POS], phi)


def _horizon_per_position(h: Hypothesis, horizons: list[Claim]) -> None:
    """Every writer into a horizon head carries, at each position t, only the horizon class of
    t (``horizon_at``: [PAD], [END] after "(" or ")", suffix open proportion above 1/2 or not)."""
    for horizon in horizons:
        for port in horizon.component.ports:
            for w in _writers(horizon.component):
                h.claim(w, F["horizon_at"], into=(horizon, port), name=f"{horizon.name}.{port}<-{w}")


# ---- the experiments ---------------------------------------------------------------------------


def exp1a_literal() -> Hypothesis:
    """1a as Redwood wrote it: direct paths into the unembedding only (the last MLP resampled)."""
    return _direct("1a literal: direct paths, last MLP resampled", F["count_test"], readout_mlp=False)[0]


def exp1a_redwood_heads() -> Hypothesis:
    """1a with Redwood's head numbers (1.0, 2.0 <- count test; 2.1 <- horizon test) on our
    read-out: how far their mapping is from this model's."""
    return _direct(
        "1a with Redwood's heads (1.0, 2.0 count; 2.1 horizon)", F["count_test"],
        count_heads=(Head(1, 0), Head(2, 0)), horizon_heads=(Head(2, 1),), prefix_head=None,
    )[0]


def exp1a() -> Hypothesis:
    """1a: count heads <- count test, horizon heads <- horizon test, prefix head <- prefix
    horizon test, into the read-out (unembedding + last MLP)."""
    return _direct("1a: read-out paths, count / horizon", F["count_test"])[0]


def exp1b() -> Hypothesis:
    """1b: as 1a, with the count heads carrying count test AND starts with "("."""
    return _direct("1b: read-out paths, count&open / horizon", F["count_and_starts_open"])[0]


def exp2a() -> Hypothesis:
    """2a: 1b, and the count heads read only position READ_POS of their input, computed from the
    p-head there (agreeing on p if the string starts with "(") and the embeddings (agreeing on
    starts-open)."""
    h, counts, _ = _direct("2a: count heads read p at pos 1 + embeddings", F["count_and_starts_open"])
    _count_heads_from_read_pos(h, counts, phi=False)
    return h


def exp2b() -> Hypothesis:
    """2b (closest expressible): 2a with the p-head's output at READ_POS claimed to be phi(p), an
    average over the parentheses of per-token values (see `_phi` and the module docstring)."""
    h, counts, _ = _direct("2b: as 2a, p-head = phi(p)", F["count_and_starts_open"])
    _count_heads_from_read_pos(h, counts, phi=True)
    return h


def exp3a() -> Hypothesis:
    """3a: 1b, and the horizon head's input split by position, each position carrying only its
    horizon class (raw open proportion; Redwood's 3b uses an attention-adjusted one)."""
    h, _, horizons = _direct("3a: horizon heads' input per position", F["count_and_starts_open"])
    _horizon_per_position(h, horizons)
    return h


def combined() -> Hypothesis:
    """4: everything together: 2b for the count heads and 3a for the horizon head."""
    h, counts, horizons = _direct("4: combined (2b + 3a)", F["count_and_starts_open"])
    _count_heads_from_read_pos(h, counts, phi=True)
    _horizon_per_position(h, horizons)
    return h


def hypotheses() -> list[Hypothesis]:
    """Every hypothesis of this file, in the order of Redwood's post."""
    return [exp1a_literal(), exp1a_redwood_heads(), exp1a(), exp1b(), exp2a(), exp2b(), exp3a(), combined()]
