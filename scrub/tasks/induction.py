"""Induction: continue a repeated segment of random tokens.

Each sequence is random tokens followed by a segment ``r`` of length ``L`` repeated twice, flush
with the end of the context::

    position:  0 ............ n_ctx-2L ........ n_ctx-L ........ n_ctx-1
    content:   random prefix | r (first copy)   | r (second copy)

Once the model has seen the first token of the second copy, every later token of the second copy
is predictable by *induction*: find the previous occurrence of the current token and copy the token
that followed it. The period ``L`` is drawn per sequence (uniformly in
``[min_period, max_period]``) so that a model cannot solve the task by attending a fixed offset
back; with a fixed period a 1-layer model learns it by position alone, with a variable one it needs
the two-layer circuit (a previous-token head in layer 0 feeding the key of an induction head in
layer 1).
"""

from __future__ import annotations

import operator
from typing import Any

import torch

from scrub.data import Dataset
from scrub.errors import DatasetError

__all__ = ["induction"]


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise DatasetError(f"induction(): {name} must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise DatasetError(
            f"induction(): {name} must be an integer, got {type(value).__name__} {value!r}"
        ) from None


def _validate(
    n: int, seed: int, vocab: int, n_ctx: int, min_period: int, max_period: int, noise: float, name: Any
) -> None:
    if n < 1:
        raise DatasetError(f"induction(): n is the number of sequences and must be >= 1, got n={n}")
    if seed < 0:
        raise DatasetError(f"induction(): seed must be a non-negative integer, got seed={seed}")
    if vocab < 2:
        raise DatasetError(
            f"induction(): vocab must be >= 2 so that tokens carry information, got vocab={vocab}"
        )
    if min_period < 2:
        raise DatasetError(
            f"induction(): min_period must be >= 2 (a segment of length L has L-1 tokens predictable "
            f"by induction), got min_period={min_period}"
        )
    if min_period > max_period:
        raise DatasetError(
            f"induction(): min_period ({min_period}) must be <= max_period ({max_period}); "
            f"swap them or set them equal for a fixed period"
        )
    if 2 * max_period > n_ctx:
        raise DatasetError(
            f"induction(): two copies of the longest segment must fit in the context, but "
            f"2 * max_period = {2 * max_period} > n_ctx = {n_ctx}; lower max_period to at most "
            f"{n_ctx // 2} or raise n_ctx to at least {2 * max_period}"
        )
    if isinstance(noise, bool) or not isinstance(noise, (int, float)):
        raise DatasetError(f"induction(): noise must be a float in [0, 1), got {noise!r}")
    if not 0.0 <= float(noise) < 1.0:
        raise DatasetError(
            f"induction(): noise is the probability of corrupting each token of the second copy "
            f"and must be in [0, 1), got noise={noise}"
        )
    if not isinstance(name, str):
        raise DatasetError(f"induction(): name must be a string, got {type(name).__name__}")


def induction(
    n: int = 4096,
    seed: int = 0,
    *,
    vocab: int = 50,
    n_ctx: int = 32,
    min_period: int = 6,
    max_period: int = 16,
    noise: float = 0.0,
    name: str = "induction",
) -> Dataset:
    """Sequences of random tokens that end with a segment repeated twice.

    Row ``i`` has period ``L = extras["period"][i]``, drawn uniformly in
    ``[min_period, max_period]``. Its last ``2L`` positions hold a random segment ``r`` twice: the
    first copy at ``[n_ctx - 2L, n_ctx - L)``, the second at ``[n_ctx - L, n_ctx)``; the positions
    before are independent uniform tokens (which may by chance repeat tokens of ``r``; that makes
    a few targets ambiguous and puts a floor of about 0.2 nats under the loss at ``vocab=50``).

    ``targets[:, t] = tokens[:, t + 1]`` (the next token); the last position's target is 0 and is
    never scored. ``loss_mask[:, t]`` is True exactly for ``t`` in ``[n_ctx - L, n_ctx - 2]``: the
    positions inside the second copy whose next token is predictable by induction (with
    ``noise=0``, ``tokens[t + 1] == tokens[t + 1 - L]`` at every scored ``t``).

    Args:
        n: number of sequences (rows).
        seed: seed of the ``torch.Generator`` that all randomness comes from; the same arguments
            give a bit-identical dataset.
        vocab: tokens are drawn uniformly from ``[0, vocab)``.
        n_ctx: sequence length.
        min_period, max_period: bounds (inclusive) of the segment length ``L``; ``2 * max_period``
            must fit in ``n_ctx``.
        noise: a broader, harder distribution for generality checks. Each token of the second copy
            except its first is independently replaced, with this probability, by a uniform random
            token (which may equal the original). The scored positions stay the same: a replaced
            token is an unpredictable target for the position before it, and as the current token
            it no longer matches its first-copy twin, so induction from it has no cue.
            ``noise=0`` is the clean task.
        name: the dataset's label in reports.

    Returns:
        A `scrub.Dataset` with ``tokens``, ``targets`` and ``loss_mask`` of shape ``[n, n_ctx]``
        and extras ``"period"`` (``[n]``, ``L``) and ``"second_start"`` (``[n]``, ``n_ctx - L``).

    Raises:
        DatasetError: an argument is out of range (``n < 1``, ``vocab < 2``,
            ``2 * max_period > n_ctx``, ``min_period < 2``, ``noise`` outside ``[0, 1)``, ...).
    """
    n, seed, vocab = _as_int("n", n), _as_int("seed", seed), _as_int("vocab", vocab)
    n_ctx = _as_int("n_ctx", n_ctx)
    min_period, max_period = _as_int("min_period", min_period), _as_int("max_period", max_period)
    _validate(n, seed, vocab, n_ctx, min_period, max_period, noise, name)

    generator = torch.Generator().manual_seed(seed)
    # Order of draws is part of the contract (same seed -> same dataset): periods, tokens, noise.
    period = torch.randint(min_period, max_period + 1, (n,), generator=generator)  # [n]
    random_tokens = torch.randint(0, vocab, (n, n_ctx), generator=generator)  # [n, pos]
    pos = torch.arange(n_ctx)[None, :]  # [1, pos]
    second_start = n_ctx - period  # [n]
    in_second = pos >= second_start[:, None]  # [n, pos]
    # The second copy reads its tokens from L positions back (the first copy).
    source = torch.where(in_second, pos - period[:, None], pos)  # [n, pos]
    tokens = torch.gather(random_tokens, 1, source)  # [n, pos]

    if noise > 0:
        corrupt = torch.rand((n, n_ctx), generator=generator) < noise  # [n, pos]
        replacement = torch.randint(0, vocab, (n, n_ctx), generator=generator)  # [n, pos]
        corrupt &= pos > second_start[:, None]  # the second copy except its first token
        tokens = torch.where(corrupt, replacement, tokens)

    targets = torch.zeros_like(tokens)  # [n, pos]
    targets[:, :-1] = tokens[:, 1:]
    loss_mask = in_second & (pos <= n_ctx - 2)  # [n, pos]: t in [n_ctx - L, n_ctx - 2]

    return Dataset(
        tokens=tokens,
        targets=targets,
        loss_mask=loss_mask,
        name=name,
        extras={"period": period, "second_start": second_start},
    )
