"""Balanced parentheses: classify a string of up to 40 parentheses as balanced or not.

The task of Redwood Research's paren-balance checker (Chan et al. 2022, "Causal scrubbing: results
on a paren balance checker", https://www.lesswrong.com/s/h95ayYYwMebGEYN5y/p/kjudfaQazMmC74SbF),
with a data mix modelled on their ``random_choice_len_40_extra_yeses_8``: random strings plus extra
balanced strings and near misses, so that about a quarter of the rows are balanced.

Tokens (Redwood's ``ParenTokenizer`` ids)::

    0 = [START]   1 = [PAD]   2 = [END]   3 = "("   4 = ")"

A row is ``[START] p_1 ... p_L [END] [PAD] ...`` with ``L`` parentheses (``2 <= L <= max_len``) at
positions ``1..L``, the end token at ``L + 1`` and padding up to ``n_ctx = max_len + 2``. The class
is read at position 0: ``targets[:, 0]`` is 1 for a balanced row and 0 otherwise, and
``loss_mask`` is True only at position 0 (``targets`` is 0, unscored, elsewhere).

A string is balanced iff it passes two tests (Redwood's algorithm, read right to left):

- the **count test**: the proportion of open parentheses in the whole string is exactly 1/2;
- the **horizon test**: no suffix opens more than it closes, i.e. for every position ``t`` the
  proportion ``p_t`` of open parentheses among the parentheses at positions ``>= t`` is at most 1/2.
  Together with the count test this is the usual "no prefix closes more than it opens"; alone the
  two differ (``"(("`` fails the suffix form, passes the prefix form), so the prefix form is
  recorded separately as ``prefix_horizon_test``.
"""

from __future__ import annotations

import operator
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor

from scrub.data import Dataset, Feature
from scrub.errors import DatasetError

__all__ = ["parens", "parens_from_strings", "features", "encode", "decode", "START", "PAD", "END", "OPEN", "CLOSE", "KINDS"]

START, PAD, END, OPEN, CLOSE = 0, 1, 2, 3, 4
VOCAB = 5
#: How rows are drawn (``extras["kind"]`` holds the index) and the share of each kind.
KINDS: tuple[tuple[str, float], ...] = (
    ("balanced", 0.25),  # a uniformly random balanced string of n pairs
    ("count_only", 0.20),  # a shuffle of n "(" and n ")" that is not balanced: count ok, horizon fails
    ("near_horizon", 0.10),  # a balanced string of n-1 pairs with ")(" inserted at depth 0
    ("near_count", 0.10),  # a balanced string of n pairs with one parenthesis flipped
    ("random", 0.35),  # L uniform in [2, max_len], each character uniform
)
NO_PAREN = -1.0  # open_proportion where the suffix holds no parenthesis ([END] and [PAD])


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise DatasetError(f"parens(): {name} must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise DatasetError(f"parens(): {name} must be an integer, got {type(value).__name__} {value!r}") from None


# ---- generation (steps: +1 = "(", -1 = ")", 0 = no character) -----------------------------------


def _dyck(pairs: Tensor, width: int, g: torch.Generator) -> Tensor:
    """Uniformly random balanced strings of ``pairs[i]`` pairs, by the cycle lemma: ``[m, width]``.

    A uniform arrangement of ``n`` up-steps and ``n + 1`` down-steps has exactly one rotation whose
    first ``2n`` steps never go below zero: the one starting just after the first minimum of the
    prefix sums. Dropping its last (down) step gives a uniform balanced string.
    """
    m, cols = len(pairs), width + 1
    idx = torch.arange(cols)[None, :]  # [1, cols]
    size = 2 * pairs[:, None] + 1  # [m, 1] steps in the arrangement
    keys = torch.rand((m, cols), generator=g)  # [m, cols]
    keys = torch.where(idx < size, keys, torch.full_like(keys, 2.0))
    rank = keys.argsort(dim=1).argsort(dim=1)  # [m, cols] rank of each slot
    steps = torch.where(rank < pairs[:, None], 1, -1)
    steps = torch.where(idx < size, steps, 0)
    prefix = steps.cumsum(dim=1)  # [m, cols]
    prefix = torch.where(idx < size, prefix, torch.full_like(prefix, 10**6))
    first_min = prefix.argmin(dim=1, keepdim=True)  # [m, 1] (argmin returns the first minimum)
    source = (first_min + 1 + idx) % size  # [m, cols] the rotated arrangement
    rotated = steps.gather(1, source)
    return torch.where(idx < 2 * pairs[:, None], rotated, 0)[:, :width]  # [m, width]


def _shuffle(pairs: Tensor, width: int, g: torch.Generator) -> Tensor:
    """Uniform arrangements of ``n`` "(" and ``n`` ")": ``[m, width]``."""
    idx = torch.arange(width)[None, :]
    size = 2 * pairs[:, None]
    keys = torch.rand((len(pairs), width), generator=g)
    keys = torch.where(idx < size, keys, torch.full_like(keys, 2.0))
    rank = keys.argsort(dim=1).argsort(dim=1)
    return torch.where(idx < size, torch.where(rank < pairs[:, None], 1, -1), 0)


def _insert_close_open(word: Tensor, g: torch.Generator) -> Tensor:
    """Insert ")(" into each balanced ``word`` at a uniformly chosen point of depth zero."""
    m, width = word.shape
    length = (word != 0).sum(dim=1, keepdim=True)  # [m, 1]
    depth_before = torch.cat([torch.zeros((m, 1), dtype=word.dtype), word.cumsum(dim=1)[:, :-1]], dim=1)
    idx = torch.arange(width)[None, :]
    zero = ((depth_before == 0) & (idx <= length)) | (idx == length)  # [m, width] candidate points
    keys = torch.where(zero, torch.rand((m, width), generator=g), torch.full((m, width), -1.0))
    k = keys.argmax(dim=1, keepdim=True)  # [m, 1]
    source = torch.where(idx < k, idx, idx - 2).clamp(min=0)
    out = word.gather(1, source)
    out = torch.where(idx == k, -1, out)
    out = torch.where(idx == k + 1, 1, out)
    return torch.where(idx < length + 2, out, 0)


def _generate(n: int, max_len: int, shares: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(steps [n, max_len], kind [n])``; the order of the draws is part of the contract."""
    u = torch.rand(n, generator=g, dtype=torch.float64)
    kind = torch.bucketize(u, shares.cumsum(0)[:-1], right=True)  # [n]
    max_pairs = max_len // 2
    pairs = torch.randint(1, max_pairs + 1, (n,), generator=g)  # [n]
    rand_len = torch.randint(2, max_len + 1, (n,), generator=g)  # [n]
    near_h = kind == 2  # near_horizon: a balanced string of n - 1 pairs
    dyck = _dyck(torch.where(near_h, pairs - 1, pairs), max_len, g)  # [n, max_len]
    shuffled = _shuffle(pairs, max_len, g)
    coin = torch.rand((n, max_len), generator=g) < 0.5
    flip_at = (torch.rand(n, generator=g) * (2 * pairs)).long()  # [n] in [0, 2n)
    inserted = _insert_close_open(dyck, g)

    idx = torch.arange(max_len)[None, :]
    random_steps = torch.where(idx < rand_len[:, None], torch.where(coin, 1, -1), 0)
    # count_only: a shuffle that happens to be balanced is rotated left by one (it then ends in "(")
    balanced = _passes_horizon_steps(shuffled)
    rolled = shuffled.gather(1, (idx + 1) % (2 * pairs[:, None]))
    count_only = torch.where(balanced[:, None], torch.where(idx < 2 * pairs[:, None], rolled, 0), shuffled)
    flipped = torch.where(idx == flip_at[:, None], -dyck, dyck)

    options = torch.stack([dyck, count_only, inserted, flipped, random_steps])  # [kinds, n, max_len]
    steps = options.gather(0, kind[None, :, None].expand(1, n, max_len))[0]
    return steps, kind


def _passes_horizon_steps(steps: Tensor) -> Tensor:
    """Whether a step sequence never goes below zero from the left and ends at zero."""
    prefix = steps.cumsum(dim=1)
    return (prefix.min(dim=1).values >= 0) & (prefix[:, -1] == 0)


def _tokens_from_steps(steps: Tensor) -> Tensor:
    n, max_len = steps.shape
    length = (steps != 0).sum(dim=1)  # [n]
    tokens = torch.full((n, max_len + 2), PAD, dtype=torch.long)
    tokens[:, 0] = START
    body = torch.where(steps > 0, OPEN, CLOSE)
    tokens[:, 1 : max_len + 1] = torch.where(steps != 0, body, PAD)
    tokens[torch.arange(n), length + 1] = END
    return tokens


# ---- labels and features from tokens -------------------------------------------------------------


def _extras(tokens: Tensor) -> dict[str, Tensor]:
    """Every per-row and per-position feature of the task, from the tokens alone."""
    is_open = (tokens == OPEN).long()  # [n, pos]
    is_close = (tokens == CLOSE).long()
    # suffix counts: parentheses at positions >= t
    open_after = is_open.flip(1).cumsum(1).flip(1)  # [n, pos]
    close_after = is_close.flip(1).cumsum(1).flip(1)
    parens_after = open_after + close_after
    has = parens_after > 0
    p = torch.where(has, open_after.float() / parens_after.clamp(min=1).float(), torch.full(tokens.shape, NO_PAREN))
    count = 2 * open_after[:, 0] == parens_after[:, 0]  # [n]
    horizon = (~has | (2 * open_after <= parens_after)).all(dim=1)  # every suffix: opens <= closes
    prefix_depth = (is_open - is_close).cumsum(1)
    prefix_horizon = prefix_depth.min(dim=1).values >= 0  # no prefix closes more than it opens
    starts_open = tokens[:, 1] == OPEN
    length = parens_after[:, 0]
    # Redwood's per-position horizon classes (their `to_horizon_vals`): 0 on [PAD], -1 / +1 on [END]
    # after "(" / ")", -2 where the suffix opens more than it closes (p_t > 1/2), +2 where not.
    prev = torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1)
    horizon_at = torch.where(2 * open_after > parens_after, -2, 2)
    horizon_at = torch.where(tokens == END, torch.where(prev == OPEN, -1, 1), horizon_at)
    horizon_at = torch.where(tokens == PAD, 0, horizon_at)
    p1 = p[:, 1]
    return {
        "balanced": count & horizon,
        "count_test": count,
        "horizon_test": horizon,
        "prefix_horizon_test": prefix_horizon,
        "starts_open": starts_open,
        "count_and_starts_open": count & starts_open,
        "p1_if_starts_open": torch.where(starts_open, p1, torch.full_like(p1, NO_PAREN)),
        "open_proportion": p,
        "horizon_at": horizon_at.long(),
        "length": length,
    }


def _dataset(tokens: Tensor, name: str, kind: Tensor) -> Dataset:
    extras = _extras(tokens)
    extras["kind"] = kind
    targets = torch.zeros_like(tokens)
    targets[:, 0] = extras["balanced"].long()
    loss_mask = torch.zeros(tokens.shape, dtype=torch.bool)
    loss_mask[:, 0] = True
    return Dataset(tokens=tokens, targets=targets, loss_mask=loss_mask, name=name, extras=extras)


def _shares(mix: Optional[Mapping[str, float]]) -> Tensor:
    if mix is None:
        return torch.tensor([s for _, s in KINDS], dtype=torch.float64)
    names = [k for k, _ in KINDS]
    unknown = sorted(set(mix) - set(names))
    if unknown or any(float(v) < 0 for v in mix.values()) or sum(float(v) for v in mix.values()) <= 0:
        raise DatasetError(
            f"parens(): mix must map kinds {names} to non-negative shares with a positive sum, got {dict(mix)!r}"
        )
    shares = torch.tensor([float(mix.get(k, 0.0)) for k in names], dtype=torch.float64)
    return shares / shares.sum()


def parens(
    n: int = 4096,
    seed: int = 0,
    *,
    max_len: int = 40,
    mix: Optional[Mapping[str, float]] = None,
    name: str = "parens",
) -> Dataset:
    """Strings of 2 to ``max_len`` parentheses, about a quarter of them balanced.

    Each row is drawn from one of `KINDS` (shares 25 / 20 / 10 / 10 / 35%); ``n`` is the number of
    pairs, uniform in ``[1, max_len // 2]``:

    - ``balanced``: a uniformly random balanced string of ``n`` pairs;
    - ``count_only``: a uniform arrangement of ``n`` "(" and ``n`` ")" (passes the count test);
      if it happens to be balanced it is rotated left by one, so it always fails the horizon test;
    - ``near_horizon``: a balanced string of ``n - 1`` pairs with ``")("`` inserted at a point of
      depth zero: passes the count test, and its lowest prefix depth is exactly -1;
    - ``near_count``: a balanced string of ``n`` pairs with one character flipped (count off by 2);
    - ``random``: length uniform in ``[2, max_len]``, each character "(" or ")" with probability 1/2.

    Args:
        n: number of rows.
        seed: seed of the ``torch.Generator`` all randomness comes from (same arguments, same
            dataset, bit for bit).
        max_len: the longest string; ``n_ctx = max_len + 2`` (an even number >= 2).
        mix: shares of the kinds, e.g. ``{"balanced": 1, "near_count": 1}`` (normalised; kinds
            left out get none); ``None`` is the default mix above.
        name: the dataset's label in reports.

    Returns:
        A `scrub.Dataset` of shape ``[n, max_len + 2]`` (see the module docstring for the tokens),
        with extras (``[n]`` unless noted):

        - ``balanced``, ``count_test``, ``horizon_test`` (every suffix has at most as many "(" as
          ")"), ``prefix_horizon_test`` (every prefix has at least as many "(" as ")"),
          ``starts_open`` (position 1 is "("), ``count_and_starts_open`` (both; Redwood's
          ``count_open_cond``): bool;
        - ``p1_if_starts_open``: the open proportion of the whole string if it starts with "(",
          else -1 (Redwood's ``p1_if_starts_open``): float;
        - ``open_proportion`` ``[n, pos]``: at position ``t``, the proportion of "(" among the
          parentheses at positions ``t, t+1, ..., end`` (Redwood's ``p_open_after``; positions 0
          and 1 both hold the whole string's proportion); -1 at [END] and [PAD], whose suffix has
          no parenthesis: float;
        - ``horizon_at`` ``[n, pos]``: Redwood's per-position horizon class ``to_horizon_vals``:
          0 at [PAD], -1 / +1 at [END] after "(" / ")", -2 where ``open_proportion > 1/2``, +2
          where it is ``<= 1/2`` (so ``horizon_test`` is "no negative entry"): int;
        - ``length``: number of parentheses; ``kind``: index into `KINDS`.

    Raises:
        DatasetError: ``n < 1``, ``seed < 0``, ``max_len`` odd or below 2, or a bad ``mix``.
    """
    n, seed, max_len = _as_int("n", n), _as_int("seed", seed), _as_int("max_len", max_len)
    if n < 1:
        raise DatasetError(f"parens(): n is the number of rows and must be >= 1, got n={n}")
    if seed < 0:
        raise DatasetError(f"parens(): seed must be a non-negative integer, got seed={seed}")
    if max_len < 2 or max_len % 2:
        raise DatasetError(
            f"parens(): max_len must be an even number >= 2 (the longest balanced string has "
            f"max_len // 2 pairs), got max_len={max_len}"
        )
    if not isinstance(name, str):
        raise DatasetError(f"parens(): name must be a string, got {type(name).__name__}")
    shares = _shares(mix)
    g = torch.Generator().manual_seed(seed)
    steps, kind = _generate(n, max_len, shares, g)
    return _dataset(_tokens_from_steps(steps), name, kind)


def encode(strings: Sequence[str], max_len: int = 40) -> Tensor:
    """Tokens ``[len(strings), max_len + 2]`` for strings of "(" and ")" (at most ``max_len`` each)."""
    rows = []
    for s in strings:
        if len(s) > max_len or set(s) - {"(", ")"}:
            raise DatasetError(f"encode(): {s!r} must be at most {max_len} characters of '(' and ')'")
        rows.append([START] + [OPEN if c == "(" else CLOSE for c in s] + [END] + [PAD] * (max_len - len(s)))
    return torch.tensor(rows, dtype=torch.long)


def decode(tokens: Tensor) -> list[str]:
    """The strings of parentheses in ``tokens`` ``[n, pos]``."""
    return ["".join("(" if t == OPEN else ")" for t in row.tolist() if t in (OPEN, CLOSE)) for row in tokens]


def parens_from_strings(strings: Sequence[str], *, max_len: int = 40, name: str = "parens-strings") -> Dataset:
    """A dataset of the given strings (``extras["kind"]`` is -1), with every extra of `parens`."""
    if not strings:
        raise DatasetError("parens_from_strings(): give at least one string")
    tokens = encode(strings, max_len)
    return _dataset(tokens, name, torch.full((len(strings),), -1, dtype=torch.long))


def features() -> dict[str, Feature]:
    """The task's features, read from the dataset's extras (`Feature.extra`).

    Per row: ``count_test``, ``horizon_test``, ``prefix_horizon_test``, ``starts_open``,
    ``count_and_starts_open`` (count test AND starts with "(", one bool per row, as Redwood's
    ``count_open_cond``), ``p1_if_starts_open``, ``balanced``, ``length``. Per position:
    ``open_proportion``, ``horizon_at``.
    """
    keys = (
        "count_test", "horizon_test", "prefix_horizon_test", "starts_open", "count_and_starts_open",
        "p1_if_starts_open", "balanced", "length", "open_proportion", "horizon_at",
    )
    return {k: Feature.extra(k) for k in keys}
