"""Indirect object identification (IOI): "When Mary and John went to the store, John gave a drink to" -> " Mary".

The task of Wang et al. 2022, "Interpretability in the Wild: a Circuit for Indirect Object
Identification in GPT-2 small" (arXiv 2211.00593). A prompt names two people, then mentions one of
them again (the *subject* S); the model should complete with the other one (the *indirect object*
IO). Two template families differ in which name comes first:

* ABBA (``duplicated_first == 0``): "When Mary and John went to the store, John gave a drink to" -> " Mary"
* BABA (``duplicated_first == 1``): "When John and Mary went to the store, John gave a drink to" -> " Mary"

The ABC variant (``abc=True``) replaces the second mention of S by a third name C, so that no name
is duplicated ("When Mary and John went to the store, David gave a drink to"): the paper's
corrupted distribution. With the same seed, the ABC dataset holds the same rows as the IOI one with
only S2 replaced, so the two pair up row by row.

**Layout.** The templates (`IOI_TEMPLATES`, written for this project in the paper's style) share
one token layout when names, places and objects are single tokens (the word tokenizer and GPT-2):
with a BOS token, ``[BOS] When N1 and N2 went to the PLACE , S2 gave a OBJECT to`` -- the names at
positions 2 and 4, S2 at 10, the last token (END, where the IO name is predicted) at 14, and 15
positions in all. Only the order of the first two names varies (ABBA vs BABA). A fixed layout lets
a hypothesis restrict its edges to positions (``S2``, ``END``), and keeps resampled "other" data
structurally aligned with the reference. `ioi_layout` returns these positions; per-row positions
are also in the extras, so custom templates of varying layout work too (prompts are right-padded).

Tokens are built slot by slot: each literal piece of a template is encoded once and each name,
place and object once (with its leading space), then concatenated. For byte-level BPE tokenizers
such as GPT-2's this equals encoding the whole prompt (slots start at word boundaries).
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from typing import Any, Callable, Iterable, Optional, Sequence

import torch

from scrub.data import Dataset, Feature
from scrub.errors import DatasetError
from scrub.tasks.text import WordTokenizer, encoder, is_single_token, pieces, special_id

__all__ = [
    "ioi", "ioi_features", "ioi_layout", "ioi_word_tokenizer", "is_single_token", "WordTokenizer",
    "IOI_TEMPLATES", "IOI_NAMES", "IOI_PLACES", "IOI_OBJECTS",
]  # fmt: skip

# Slots: {N1} {N2} (the first two names), {S2} (the repeated subject, or C in the ABC variant),
# {PLACE}, {OBJECT}. Every template: 1 intro word, N1 "and" N2, 2 words + "the" + PLACE, ",", S2,
# verb "a" OBJECT "to" -- the same 14 tokens (15 with BOS) when fillers are single tokens.
IOI_TEMPLATES: tuple[str, ...] = (
    "When {N1} and {N2} went to the {PLACE}, {S2} gave a {OBJECT} to",
    "After {N1} and {N2} arrived at the {PLACE}, {S2} handed a {OBJECT} to",
    "While {N1} and {N2} were at the {PLACE}, {S2} passed a {OBJECT} to",
    "Once {N1} and {N2} got to the {PLACE}, {S2} offered a {OBJECT} to",
    "When {N1} and {N2} walked into the {PLACE}, {S2} showed a {OBJECT} to",
    "After {N1} and {N2} returned to the {PLACE}, {S2} sent a {OBJECT} to",
    "While {N1} and {N2} worked at the {PLACE}, {S2} threw a {OBJECT} to",
    "Since {N1} and {N2} stayed at the {PLACE}, {S2} brought a {OBJECT} to",
    "When {N1} and {N2} met at the {PLACE}, {S2} sold a {OBJECT} to",
    "Once {N1} and {N2} ran to the {PLACE}, {S2} gave a {OBJECT} to",
    "After {N1} and {N2} moved to the {PLACE}, {S2} handed a {OBJECT} to",
    "Because {N1} and {N2} drove to the {PLACE}, {S2} passed a {OBJECT} to",
    "Before {N1} and {N2} headed to the {PLACE}, {S2} offered a {OBJECT} to",
    "As {N1} and {N2} waited at the {PLACE}, {S2} showed a {OBJECT} to",
    "When {N1} and {N2} looked around the {PLACE}, {S2} brought a {OBJECT} to",
)

# Common first names, chosen to be single GPT-2 tokens with a leading space (" Mary").
IOI_NAMES: tuple[str, ...] = (
    "Mary", "John", "James", "David", "Michael", "Robert", "William", "Richard", "Thomas", "Paul",
    "Mark", "Peter", "George", "Daniel", "Kevin", "Brian", "Eric", "Steven", "Andrew", "Jason",
    "Ryan", "Adam", "Alex", "Chris", "Tom", "Sarah", "Lisa", "Anna", "Emma", "Laura",
    "Rachel", "Kate", "Jessica", "Amy", "Alice", "Susan", "Karen", "Emily", "Jennifer", "Michelle",
)  # fmt: skip

IOI_PLACES: tuple[str, ...] = (
    "store", "garden", "restaurant", "school", "hospital", "office", "house", "park", "station",
    "beach", "library", "market", "church", "hotel", "airport",
)  # fmt: skip

# Objects start with a consonant ("a ring", never "a apple").
IOI_OBJECTS: tuple[str, ...] = (
    "drink", "ring", "book", "letter", "ball", "gift", "cake", "bag", "key", "hat", "bottle", "box",
)  # fmt: skip

_SLOTS = ("N1", "N2", "S2", "PLACE", "OBJECT")
_SLOT_RE = re.compile(r"\{(" + "|".join(_SLOTS) + r")\}")


def ioi_word_tokenizer(extra_words: Iterable[str] = ()) -> WordTokenizer:
    """A `WordTokenizer` whose vocabulary covers the default IOI templates, names, places and objects.

    Every name, place and object (with a leading space) and every word of the templates is one
    token; ``extra_words`` adds more. Use it with a randomly initialised model of
    ``d_vocab = len(tokenizer)``.
    """
    words: set[str] = set()
    for template in IOI_TEMPLATES:
        for kind, text in _parse(template):
            if kind == "lit":
                words.update(pieces(text))
    words.update(" " + word for word in (*IOI_NAMES, *IOI_PLACES, *IOI_OBJECTS))
    words.update(extra_words)
    return WordTokenizer(w for w in words if w.strip())


# ---- templates ----------------------------------------------------------------------------------


def _parse(template: str) -> list[tuple[str, str]]:
    """``[("lit", text) | ("slot", NAME) ...]``; a slot takes the space before it (" Mary")."""
    counts = Counter(_SLOT_RE.findall(template))
    for slot in ("N1", "N2", "S2"):
        if counts[slot] != 1:
            raise DatasetError(
                f"ioi(): template {template!r} must contain {{{slot}}} exactly once (it has {counts[slot]}); "
                f"a template names N1 and N2, then repeats one of them as S2"
            )
    order = [s for s in _SLOT_RE.findall(template) if s in ("N1", "N2", "S2")]
    if order != ["N1", "N2", "S2"]:
        raise DatasetError(f"ioi(): template {template!r} must mention {{N1}}, {{N2}}, {{S2}} in that order")
    if template != template.rstrip() or re.search(_SLOT_RE.pattern + r"$", template):
        raise DatasetError(
            f"ioi(): template {template!r} must end with a word (the END token, where the IO name is "
            f"predicted), not with a slot or whitespace"
        )
    pieces: list[tuple[str, str]] = []
    for i, part in enumerate(_SLOT_RE.split(template)):
        if i % 2 == 1:
            pieces.append(("slot", part))
        elif part:
            pieces.append(("lit", part))
    # move the space before each slot into the slot's value
    out: list[tuple[str, str]] = []
    for kind, text in pieces:
        if kind == "slot":
            spaced = bool(out) and out[-1][0] == "lit" and out[-1][1].endswith(" ")
            if spaced:
                out[-1] = ("lit", out[-1][1][:-1])
                if not out[-1][1]:
                    out.pop()
            out.append(("slot" + (" " if spaced else ""), text))
        else:
            out.append((kind, text))
    return out


def _cached(encode: Callable[[str], list[int]]) -> Callable[[str], list[int]]:
    cache: dict[str, list[int]] = {}

    def enc(text: str) -> list[int]:
        if text not in cache:
            cache[text] = encode(text)
            if not cache[text]:
                raise DatasetError(f"ioi(): the tokenizer encodes {text!r} to no tokens")
        return cache[text]

    return enc


def _fill(kind: str, word: str) -> str:
    """The text a slot of ``kind`` (``"slot"`` or ``"slot "``: with the space before it) holds."""
    return (" " if kind.endswith(" ") else "") + word


def _single(parsed: list, slot: str, words: list[str], enc: Callable[[str], list[int]]) -> list[str]:
    """The ``words`` that are one token wherever ``slot`` occurs."""
    kinds = {k for p in parsed for k, s in p if s == slot and k != "lit"}
    return [w for w in words if all(len(enc(_fill(k, w))) == 1 for k in kinds)]


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise DatasetError(f"ioi(): {name} must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise DatasetError(f"ioi(): {name} must be an integer, got {type(value).__name__} {value!r}") from None


def _words(kind: str, values: Optional[Sequence[str]], default: Sequence[str], minimum: int) -> list[str]:
    values = list(default if values is None else values)
    if any(not isinstance(v, str) or not v.strip() or v != v.strip() for v in values):
        raise DatasetError(f"ioi(): {kind} must be non-empty strings without surrounding spaces, got {values!r}")
    if len(set(values)) != len(values):
        dupes = sorted(v for v, c in Counter(values).items() if c > 1)
        raise DatasetError(f"ioi(): {kind} has duplicates {dupes}")
    if len(values) < minimum:
        raise DatasetError(f"ioi(): {kind} needs at least {minimum} entries, got {len(values)}")
    return values


def ioi(
    tokenizer: Any,
    n: int = 512,
    seed: int = 0,
    *,
    abc: bool = False,
    prepend_bos: bool = True,
    templates: Optional[Sequence[str]] = None,
    names: Optional[Sequence[str]] = None,
    places: Optional[Sequence[str]] = None,
    objects: Optional[Sequence[str]] = None,
    fixed_layout: bool = False,
    name: str = "ioi",
) -> Dataset:
    """IOI prompts; the model should predict the indirect object's name at the last token.

    Each row draws a template, a family (ABBA or BABA), two distinct names IO and S (and a third
    name C, distinct from both), a place and an object, in that order, from a ``torch.Generator``
    seeded with ``seed``: the same arguments give a bit-identical dataset, and ``abc=True`` with
    the same seed gives the same rows with S2 replaced by C.

    Args:
        tokenizer: a HuggingFace tokenizer (e.g. ``model.tokenizer`` of a TransformerLens model), any
            object with ``encode(str) -> list[int]``, or a callable ``str -> list[int]``. BOS is its
            ``bos_token_id`` (else ``eos_token_id``, else 0); padding is its ``pad_token_id`` (else
            ``eos_token_id``, else 0).
        n: number of prompts.
        seed: the seed of every draw.
        abc: replace S2 by a third name C (no name is duplicated).
        prepend_bos: start every prompt with the BOS token (as TransformerLens does).
        templates: template strings with slots ``{N1} {N2} {S2} {PLACE} {OBJECT}`` (default
            `IOI_TEMPLATES`); each names N1 and N2, then S2, and ends with the END word.
        names, places, objects: word lists, without leading spaces (defaults `IOI_NAMES`,
            `IOI_PLACES`, `IOI_OBJECTS`). Every name must be one token with its leading space.
        fixed_layout: drop places and objects that are not single tokens, and templates whose
            token layout differs from the most common one, so that every prompt has the same
            positions (what `ioi_layout` reads). Off: every template is used and prompts of
            other lengths are right-padded.
        name: the dataset's label in reports.

    Returns:
        A `scrub.Dataset`: ``tokens`` ``[n, pos]``; ``targets`` the next token, and the IO name at
        END (the last real token); ``loss_mask`` True only at END. Extras (all ``[n]``): ``"io"``,
        ``"s"`` (token ids of IO and S), ``"wrong_target"`` (= ``"s"``, so ``metric="logit_diff"``
        scores logit(IO) - logit(S)), ``"io_pos"``, ``"s1_pos"``, ``"s2_pos"`` (the position of S2,
        or of C), ``"end_pos"``, ``"template"`` (index into ``templates``), ``"duplicated_first"``
        (1 when the first name mentioned is S: BABA; in the ABC variant, the row's family), and
        with ``abc=True`` also ``"c"`` (C's token id).

    Raises:
        DatasetError: a bad argument, a malformed template, or a name that is not a single token.
    """
    n, seed = _as_int("n", n), _as_int("seed", seed)
    if n < 1:
        raise DatasetError(f"ioi(): n is the number of prompts and must be >= 1, got n={n}")
    if seed < 0:
        raise DatasetError(f"ioi(): seed must be a non-negative integer, got seed={seed}")
    if not isinstance(name, str):
        raise DatasetError(f"ioi(): name must be a string, got {type(name).__name__}")
    templates = list(IOI_TEMPLATES if templates is None else templates)
    if not templates or not all(isinstance(t, str) for t in templates):
        raise DatasetError(f"ioi(): templates must be a non-empty list of strings, got {templates!r}")
    names = _words("names", names, IOI_NAMES, 3)
    places = _words("places", places, IOI_PLACES, 1)
    objects = _words("objects", objects, IOI_OBJECTS, 1)
    enc = _cached(encoder(tokenizer))
    parsed = [_parse(t) for t in templates]
    name_kinds = {k for p in parsed for k, slot in p if slot in ("N1", "N2", "S2") and k != "lit"}
    bad = sorted({_fill(k, w) for w in names for k in name_kinds if len(enc(_fill(k, w))) != 1})
    if bad:
        raise DatasetError(
            f"ioi(): names must be single tokens, but {[(b, enc(b)) for b in bad][:8]} encode to several "
            f"tokens with this tokenizer; the IO name is the target, so it must be one token. Pass "
            f"names=[...] without them (scrub.tasks.ioi.is_single_token(tokenizer, ' Name') checks one)"
        )
    kept = list(range(len(templates)))
    if fixed_layout:
        places, objects = _single(parsed, "PLACE", places, enc), _single(parsed, "OBJECT", objects, enc)
        if not places or not objects:
            raise DatasetError("ioi(fixed_layout=True): no place or no object is a single token")
        layouts = [_template_layout(p, enc, prepend_bos) for p in parsed]
        modal = Counter(layouts).most_common(1)[0][0]
        kept = [i for i, lay in enumerate(layouts) if lay == modal]

    # ---- draws, in this order: template, family, IO, S, C, place, object ----
    g = torch.Generator().manual_seed(seed)
    k = len(names)
    template = torch.tensor(kept)[torch.randint(0, len(kept), (n,), generator=g)]  # [n] template indices
    dup_first = torch.randint(0, 2, (n,), generator=g)  # [n] 1: BABA
    io = torch.randint(0, k, (n,), generator=g)  # [n] name indices
    s = (io + 1 + torch.randint(0, k - 1, (n,), generator=g)) % k  # [n], != io
    c = torch.randint(0, k - 2, (n,), generator=g)  # [n]: the c-th name not in {io, s}
    c = c + (c >= torch.minimum(io, s)).long()
    c = c + (c >= torch.maximum(io, s)).long()
    place = torch.randint(0, len(places), (n,), generator=g)  # [n]
    obj = torch.randint(0, len(objects), (n,), generator=g)  # [n]

    bos = special_id(tokenizer, "bos_token_id", "eos_token_id")
    pad = special_id(tokenizer, "pad_token_id", "eos_token_id")
    rows: list[list[int]] = []
    positions = []  # per row: N1, N2, S2, END
    draws = zip(*(t.tolist() for t in (template, dup_first, io, s, c, place, obj)))
    for t, dup, io_i, s_i, c_i, place_i, obj_i in draws:
        first, second = (s_i, io_i) if dup else (io_i, s_i)
        fill = {
            "N1": names[first], "N2": names[second], "S2": names[c_i if abc else s_i],
            "PLACE": places[place_i], "OBJECT": objects[obj_i],
        }  # fmt: skip
        ids, at = [bos] if prepend_bos else [], {}
        for kind, text in parsed[t]:
            if kind != "lit":
                at[text] = len(ids)
            ids += enc(text) if kind == "lit" else enc(_fill(kind, fill[text]))
        positions.append([at["N1"], at["N2"], at["S2"], len(ids) - 1])
        rows.append(ids)

    n_pos = max(len(r) for r in rows)
    tokens = torch.full((n, n_pos), pad, dtype=torch.long)  # [n, pos]
    for i, ids in enumerate(rows):
        tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    n1_pos, n2_pos, s2_pos, end_pos = torch.tensor(positions, dtype=torch.long).unbind(1)  # each [n]
    s1_pos = torch.where(dup_first.bool(), n1_pos, n2_pos)  # [n]
    io_pos = torch.where(dup_first.bool(), n2_pos, n1_pos)  # [n]
    rows_idx = torch.arange(n)
    io_tok, s_tok = tokens[rows_idx, io_pos], tokens[rows_idx, s1_pos]  # [n] each

    pos = torch.arange(n_pos)[None, :]  # [1, pos]
    targets = torch.full_like(tokens, pad)  # [n, pos]
    targets[:, :-1] = tokens[:, 1:]
    targets = torch.where(pos < end_pos[:, None], targets, torch.full_like(targets, pad))
    targets[rows_idx, end_pos] = io_tok
    loss_mask = pos == end_pos[:, None]  # [n, pos]

    extras = {
        "io": io_tok, "s": s_tok, "wrong_target": s_tok.clone(),
        "io_pos": io_pos, "s1_pos": s1_pos, "s2_pos": s2_pos, "end_pos": end_pos,
        "template": template, "duplicated_first": dup_first,
    }  # fmt: skip
    if abc:
        extras["c"] = tokens[rows_idx, s2_pos]
    return Dataset(tokens=tokens, targets=targets, loss_mask=loss_mask, name=name, extras=extras)


def _template_layout(parsed: list, enc: Callable[[str], list[int]], prepend_bos: bool) -> tuple[int, ...]:
    """``(N1, N2, S2, END)`` positions of a parsed template when every slot is one token."""
    at, found = int(prepend_bos), {}
    for kind, text in parsed:
        if kind == "lit":
            at += len(enc(text))
        else:
            found[text] = at
            at += 1
    return (found["N1"], found["N2"], found["S2"], at - 1)


# ---- layout and features ------------------------------------------------------------------------

LAYOUT_KEYS = ("n1_pos", "n2_pos", "s2_pos", "end_pos", "n_pos")


def ioi_layout(data: Optional[Dataset] = None, *, prepend_bos: bool = True) -> dict[str, int]:
    """The positions every prompt shares: ``n1_pos``, ``n2_pos`` (the first two names), ``s2_pos``,
    ``end_pos`` and ``n_pos``.

    Without ``data``: the layout of the default templates with single-token fillers (with BOS:
    names at 2 and 4, S2 at 10, END at 14, 15 positions). With ``data`` (an `ioi` dataset): the
    layout its rows share.

    Raises:
        DatasetError: the rows of ``data`` do not share one layout (use ``ioi(..., fixed_layout=True)``),
            or ``data`` lacks the IOI extras.
    """
    if data is None:
        tokenizer = ioi_word_tokenizer()
        enc = encoder(tokenizer)
        layouts = {_template_layout(_parse(t), enc, prepend_bos) for t in IOI_TEMPLATES}
        if len(layouts) != 1:  # a guard on the templates above, not reachable by users
            raise DatasetError(f"ioi_layout(): the default templates disagree on their layout: {sorted(layouts)}")
        n1, n2, s2, end = layouts.pop()
        return dict(zip(LAYOUT_KEYS, (n1, n2, s2, end, end + 1)))
    missing = [k for k in ("io_pos", "s1_pos", "s2_pos", "end_pos") if k not in data.extras]
    if missing:
        raise DatasetError(f"ioi_layout(): dataset {data.name!r} lacks extras {missing}; build it with scrub.tasks.ioi")
    ex = data.extras
    columns = {
        "n1_pos": torch.minimum(ex["io_pos"], ex["s1_pos"]),
        "n2_pos": torch.maximum(ex["io_pos"], ex["s1_pos"]),
        "s2_pos": ex["s2_pos"],
        "end_pos": ex["end_pos"],
    }
    out = {}
    for key, col in columns.items():
        values = torch.unique(col)
        if len(values) != 1:
            raise DatasetError(
                f"ioi_layout(): the rows of dataset {data.name!r} do not share one layout ({key} takes "
                f"values {values.tolist()[:8]}); build it with scrub.tasks.ioi(..., fixed_layout=True) or "
                f"use per-row features (extras {key!r}) instead of fixed positions"
            )
        out[key] = int(values[0])
    out["n_pos"] = data.n_pos
    return out


def _extra(label: str, key: str) -> Feature:
    return Feature(label, Feature.extra(key).fn)


def ioi_features() -> dict[str, Feature]:
    """Features of an `ioi` dataset, per row (``[n]``), for claims about the IOI circuit.

    Keys: ``"io"`` (the IO name), ``"s"`` (the S name), ``"s1_pos"`` and ``"s2_pos"`` (the positions
    of the two mentions of S), ``"duplicated_first"`` (which of the first two names is duplicated:
    the ABBA/BABA family, i.e. S's position relative to IO), ``"s_and_duplicated"`` (the S name and
    which name is duplicated: the "token signal" and "position signal" of Wang et al.), and
    ``"template"``. Build them once per hypothesis and share them: scrub evaluates a Feature
    object once per dataset.
    """
    return {
        "io": _extra("IO name", "io"),
        "s": _extra("S name", "s"),
        "s1_pos": _extra("S1 position", "s1_pos"),
        "s2_pos": _extra("S2 position", "s2_pos"),
        "duplicated_first": _extra("which name is duplicated", "duplicated_first"),
        "s_and_duplicated": Feature(
            "S name + which name is duplicated",
            lambda d: Feature.extra("s").fn(d) * 2 + Feature.extra("duplicated_first").fn(d),
        ),
        "template": _extra("template", "template"),
    }
