"""Explore before you hypothesise: patching sweeps on the zoo's induction model.

The file defines ``model()`` and a *paired* ``dataset()``. Each clean row is a random prefix
followed by a segment repeated twice, as in ``scrub.tasks.induction``. Its corrupted partner is
the same row with the first copy of the segment replaced by fresh random tokens. The partner has
the same length, the same scored positions and the same current tokens, but nothing left to copy
from, so only the induction mechanism tells the two apart.

Run it: ``python hypotheses/explore_induction.py [OUT_DIR]``. This runs both sweeps, path
patching among the components that matter, and `scrub.propose`. It writes the HTML/JSON reports,
prints the proposed hypothesis as Python code, and scrubs the proposal with `scrub.evaluate`.
"""

from __future__ import annotations

import sys

import torch

import scrub
from scrub.patching import explore, paired

VOCAB = 50


def model():
    """The zoo model: a 2-layer attention-only transformer trained on induction."""
    return scrub.zoo.load("induction-2l")


def dataset(n: int = 256, seed: int = 0) -> scrub.Dataset:
    """Induction rows paired with copies whose first segment is re-drawn (``extras["corrupt_tokens"]``)."""
    clean = scrub.tasks.induction(n=n, seed=seed, vocab=VOCAB)
    generator = torch.Generator().manual_seed(seed + 1)
    pos = torch.arange(clean.n_pos)[None, :]  # [1, pos]
    period = clean.extras["period"][:, None]  # [n, 1]
    first_copy = (pos >= clean.n_pos - 2 * period) & (pos < clean.n_pos - period)  # [n, pos]
    fresh = torch.randint(0, VOCAB, clean.tokens.shape, generator=generator)  # [n, pos]
    return paired(clean, torch.where(first_copy, fresh, clean.tokens))


def previous_token_pairs(n: int = 256, seed: int = 0) -> scrub.Dataset:
    """Induction rows paired with copies in which every other token of the first copy is re-drawn.

    A narrower corruption than `dataset`: at half the scored positions only what the previous-token
    head carries (the token before the one to copy) is broken, while the token to copy survives.
    Restoring head 0.3 alone then brings those positions back, so denoising can see it; with the
    whole first copy re-drawn it cannot (0.3 and the induction heads' values form an AND).
    """
    clean = scrub.tasks.induction(n=n, seed=seed, vocab=VOCAB)
    generator = torch.Generator().manual_seed(seed + 1)
    pos = torch.arange(clean.n_pos)[None, :]  # [1, pos]
    period = clean.extras["period"][:, None]  # [n, 1]
    start = clean.n_pos - 2 * period  # [n, 1] first position of the first copy
    every_other = (pos >= start) & (pos < clean.n_pos - period) & ((pos - start) % 2 == 1)  # [n, pos]
    fresh = torch.randint(0, VOCAB, clean.tokens.shape, generator=generator)  # [n, pos]
    return paired(clean, torch.where(every_other, fresh, clean.tokens))


def main(out_dir: str = "patching-induction") -> None:
    m, data = model(), dataset()
    found = explore(m, data, out_dir, threshold=0.1)
    for direction, result in found.sweeps.items():
        print(result, end="\n\n")
    print(found.code)
    print(scrub.evaluate(found.proposal, m, data))
    print("wrote", ", ".join(found.files))


if __name__ == "__main__":
    main(*sys.argv[1:2])
