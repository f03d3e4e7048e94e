"""Induction hypotheses for the zoo model ``induction-2l``.

Source: Olsson et al. 2022, "In-context Learning and Induction Heads" (the two-head induction
circuit), and Redwood Research's causal-scrubbing results on induction heads (Chan et al. 2022,
https://www.lesswrong.com/posts/j6s9H9SHrEhEfuJnq), whose experiments these hypotheses replay on
our own model: the naive (Olsson-style) hypothesis, each of its paths alone, broader ones and a
refined one that lets the layer-0 pathways in (Redwood: 35% naive, 89% refined).

The model (see ``scrub/zoo/weights/induction-2l.json`` for the measurements): a 2-layer
attention-only transformer trained on variable-period repeated sequences. Head 0.3 is the
previous-token head (mean attention from t to t-1: 0.58 over all positions, 0.79 over the first
copy; mean-ablating it raises the induction loss from 0.25 to 2.52); head 0.0 attends to the
previous token more weakly (0.30). All four layer-1 heads are induction heads (attention from a
second-copy position t to t-L+1: 0.59-0.69).

The naive hypothesis: each induction head reads the current token through ``q`` and the token to
copy through ``v`` (both from the token embedding), and through ``k`` the previous token, carried
by the previous-token head; the induction heads feed the logits directly.

Run: ``scrub run hypotheses/induction.py`` (or ``make demo``).
"""

from __future__ import annotations

import torch

import scrub
from scrub import EXACT, Embed, Feature, Head, Hypothesis, PosEmbed

INDUCTION_HEADS = [Head(1, h) for h in range(4)]
PREV_TOKEN_HEAD = Head(0, 3)
LAYER0_HEADS = [Head(0, h) for h in range(4)]
N_CTX = 32


def _token_and_previous(data) -> torch.Tensor:
    """Per position: the pair (token at t, token at t-1), as one integer (-1 before position 0)."""
    previous = torch.full_like(data.tokens, -1)
    previous[:, 1:] = data.tokens[:, :-1]
    return data.tokens * (int(data.tokens.max()) + 2) + previous + 1


TOKEN_AND_PREVIOUS = Feature("token+prev", _token_and_previous)


def model():
    """The zoo model these hypotheses describe."""
    return scrub.zoo.load("induction-2l")


def dataset(n: int = 2048, seed: int = 0):
    """The narrow task distribution: random tokens, then a segment of length 6-16 repeated."""
    return scrub.tasks.induction(n=n, seed=seed)


def datasets(n: int = 2048):
    """Named datasets for generality checks: the task, a noisy copy, and shorter repeats."""
    return {
        "induction": scrub.tasks.induction(n=n, seed=0),
        "noisy copy (10%)": scrub.tasks.induction(n=n, seed=1, noise=0.1, name="induction-noisy"),
        "short repeats (L 3-6)": scrub.tasks.induction(n=n, seed=2, min_period=3, max_period=6, name="induction-short"),
    }


def heads_matter() -> Hypothesis:
    """The induction heads feed the logits, and (as leaves) read everything on the reference.

    Everything else that writes to the output (embeddings, layer-0 heads' direct paths) is
    resampled. This is the weakest claim: it only says which heads carry the answer.
    """
    h = Hypothesis("induction heads matter")
    out = h.output()
    for head in INDUCTION_HEADS:
        h.claim(head, EXACT, into=out)
    return h


def _induction_head(h: Hypothesis, out, head: Head, q=True, k=True, v=True, prev_heads=(PREV_TOKEN_HEAD,)):
    """Claim ``head`` into the output with the naive claim on the chosen ports.

    A port whose claim is switched off is held EXACT instead: every writer upstream of the head
    (the embeddings and the layer-0 heads) is claimed EXACT into it, so that port sees the reference.
    """
    ind = h.claim(head, EXACT, into=out, name=str(head))
    if q:
        h.claim(Embed(), Feature.token(), into=(ind, "q"), name=f"Embed->{head}.q")
    if v:
        h.claim(Embed(), Feature.token(), into=(ind, "v"), name=f"Embed->{head}.v")
    if k:
        for prev in prev_heads:
            h.claim(prev, Feature.prev_token(), into=(ind, "k"), name=f"{prev}->{head}.k")
    for port, scrubbed in (("q", q), ("k", k), ("v", v)):
        if not scrubbed:
            _hold_exact(h, ind, port, str(head))
    return ind


def _hold_exact(h: Hypothesis, ind, port: str, label: str) -> None:
    for writer in [Embed(), PosEmbed(), *LAYER0_HEADS]:
        h.claim(writer, EXACT, into=(ind, port), name=f"{writer}->{label}.{port} (exact)")


def naive() -> Hypothesis:
    """Olsson-style: q and v read the current token from the embedding; k reads the previous
    token, carried by the previous-token head 0.3."""
    h = Hypothesis("naive induction")
    out = h.output()
    for head in INDUCTION_HEADS:
        _induction_head(h, out, head)
    return h


def only_path(path: str) -> Hypothesis:
    """The naive claim on one path (``"q"``, ``"k"`` or ``"v"``) of every induction head; the
    other two ports read the reference (EXACT)."""
    h = Hypothesis(f"{path} path only")
    out = h.output()
    for head in INDUCTION_HEADS:
        _induction_head(h, out, head, q=path == "q", k=path == "k", v=path == "v")
    return h


def two_prev_heads() -> Hypothesis:
    """The naive hypothesis with both previous-token-like heads (0.0 and 0.3) feeding k."""
    h = Hypothesis("naive, prev-token heads 0.0 + 0.3")
    out = h.output()
    for head in INDUCTION_HEADS:
        _induction_head(h, out, head, prev_heads=(Head(0, 0), PREV_TOKEN_HEAD))
    return h


def broader() -> Hypothesis:
    """A broader hypothesis: the naive circuit plus the direct paths to the logits.

    The token embedding feeds the logits with the current token (bigram statistics), the
    layer-0 heads feed the logits EXACT, and both previous-token-like heads feed k.
    """
    h = Hypothesis("broader: naive + direct paths")
    out = h.output()
    h.claim(Embed(), Feature.token(), into=out, name="Embed->out")
    for head in LAYER0_HEADS:
        h.claim(head, EXACT, into=out, name=f"{head}->out")
    for head in INDUCTION_HEADS:
        _induction_head(h, out, head, prev_heads=(Head(0, 0), PREV_TOKEN_HEAD))
    return h


def refined() -> Hypothesis:
    """The naive circuit plus the pathways through layer 0 that the naive one resamples.

    In the spirit of Redwood's refinement (which let extra pathways into the induction heads),
    every layer-0 head feeds q, k and v of every induction head, and the logits directly,
    carrying the current and the previous token of its position (its attention is mostly to
    itself and its predecessor). The token embedding also feeds the logits with the token. On
    our model the v path is what the naive hypothesis misses most: layer-0 heads write the current
    token into the residual stream that the induction heads' values read.
    """
    h = Hypothesis("refined: layer 0 carries (token, previous token)")
    out = h.output()
    h.claim(Embed(), Feature.token(), into=out, name="Embed->out")
    for head in LAYER0_HEADS:
        h.claim(head, TOKEN_AND_PREVIOUS, into=out, name=f"{head}->out")
    for head in INDUCTION_HEADS:
        ind = _induction_head(h, out, head)
        for l0 in LAYER0_HEADS:
            ports = [(ind, "q"), (ind, "v")] + ([] if l0 == PREV_TOKEN_HEAD else [(ind, "k")])
            h.claim(l0, TOKEN_AND_PREVIOUS, into=ports, name=f"{l0}->{head} (token+prev)")
    return h


def hypotheses() -> list[Hypothesis]:
    """Every hypothesis of this file, in the order the demo shows them."""
    return [
        heads_matter(), naive(), only_path("q"), only_path("k"), only_path("v"),
        two_prev_heads(), broader(), refined(),
    ]
