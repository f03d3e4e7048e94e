"""Models whose circuit is known by construction: every weight set by hand, the true edges written down.

Each model is an attention-only ``HookedTransformer`` without normalisation (so the weights read
as what they do), two layers of two heads, with a dataset generator and its TRUE circuit: the
edges ``child -> parent.port`` (in `scrub.Hypothesis.full`'s terms) that carry the information
the task needs. They exist to check search (`scrub.search` from `Hypothesis.full` must find
exactly these edges) and anything else that claims to find circuits.

``load(name)`` returns the model, ``dataset(name, n, seed)`` its task, ``circuit(name)`` the
true edges, ``available()`` the names. ``get(name)`` returns all of it as a `KnownCircuit`.

Residual stream layout: one-hot blocks ``[TOK | POS | MID | ANS]``: TOK the token (one dimension
per token id), POS the position, MID what the layer-0 head writes, ANS what the unembedding reads
(``W_U[ANS_v, v] = 1``), so only ANS reaches the logits. Every head has queries and keys that
score ``SHARP`` on the key they look for and 0 elsewhere. Head 0.1 and head 1.1 are *dead*: live
queries, keys and values (they attend like the real heads) but ``W_O = 0``; the search must drop
them.

Edges from `PosEmbed` are left out of every circuit: the position embedding is the same on every
row, so resampling it changes nothing and no scrubbing (nor any resampling ablation) can tell
whether a port reads it. Compare circuits without them (`visible_edges`).

* ``"induction-known"``: sequences ``BOS r r`` for a random segment ``r`` of distinct tokens.
  Head 0.0 is a previous-token head (queries and keys by position) writing the previous token into
  MID; head 1.0 is an induction head: its query reads the current token (TOK), its key the
  previous token (MID), its value the token (TOK); it writes that token into ANS. Scored on the
  second copy (the next token is predictable there).
* ``"lookup-known"``: a two-step lookup (pointer following). Tokens are positions
  ``0..n_ctx-1``; at the last position ``T`` the answer is ``x[x[x[T]]]``. Head 0.0 at ``T``
  attends to position ``x[T]`` (query: the token, key: the position) and writes ``x[x[T]]`` into
  MID; head 1.0 attends to position ``x[x[T]]`` (query: MID, key: the position) and writes the
  token there into ANS. Scored at ``T`` only.
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping

import attrs
import torch

from scrub.components import Component, Embed, Head, Output, PosEmbed
from scrub.data import Dataset
from scrub.errors import ScrubError

__all__ = ["KnownCircuit", "available", "get", "load", "dataset", "circuit", "visible_edges", "hand_set_model", "SHARP", "GAIN"]

SHARP = 40.0  # attention score of the key a head looks for (others score 0)
GAIN = 20.0  # logit the last head adds to the answer

EdgeSpec = tuple[Component, Component, str]  # (child, parent, port); the parent Output() for the logits


@attrs.frozen(eq=False)
class KnownCircuit:
    """A hand-set model, its task and its true circuit."""

    name: str
    description: str
    build: Callable[[], object] = attrs.field(repr=False)
    make_data: Callable[[int, int], Dataset] = attrs.field(repr=False)
    edges: frozenset = attrs.field(repr=False)  # of EdgeSpec

    def model(self):
        return self.build()

    def data(self, n: int = 256, seed: int = 0) -> Dataset:
        return self.make_data(n, seed)


def hand_set_model(layout: Mapping[str, slice], *, d_vocab: int, n_ctx: int, d_head: int, n_layers: int = 2,
                   n_heads: int = 2):
    """An attention-only ``HookedTransformer`` without normalisation, every parameter zero, whose
    residual stream is the one-hot subspaces of ``layout``: ``"tok"`` (``d_vocab`` dims, the token),
    ``"pos"`` (``n_ctx`` dims, the position) and ``"ans"``, which the unembedding reads (``W_U`` maps
    its i-th dim to token i). ``d_model`` is where the last subspace ends. Heads are set by hand
    afterwards (`_set_head`)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tok, pos, ans = layout["tok"], layout["pos"], layout["ans"]
    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=max(s.stop for s in layout.values()), n_heads=n_heads, d_head=d_head,
        d_vocab=d_vocab, n_ctx=n_ctx, attn_only=True, act_fn=None, normalization_type=None,
        positional_embedding_type="standard", device="cpu", seed=0, init_weights=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TL 3.9 deprecates HookedTransformer construction
        model = HookedTransformer(cfg)
    n_ans = ans.stop - ans.start
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[:, tok] = torch.eye(d_vocab)
        model.pos_embed.W_pos[:, pos] = torch.eye(n_ctx)
        model.unembed.W_U[ans, :n_ans] = torch.eye(n_ans)
    return model


def _blank(vocab: int, n_ctx: int, d_head: int):
    """A 2-layer, 2-head `hand_set_model` with one-hot ``[TOK | POS | MID | ANS]`` blocks; and its layout."""
    tok = slice(0, vocab)
    pos = slice(tok.stop, tok.stop + n_ctx)
    mid = slice(pos.stop, pos.stop + vocab)
    ans = slice(mid.stop, mid.stop + vocab)
    layout = {"tok": tok, "pos": pos, "mid": mid, "ans": ans}
    return hand_set_model(layout, d_vocab=vocab, n_ctx=n_ctx, d_head=d_head), layout


def _score_entry(model) -> float:
    """The query/key entry ``s`` with ``s * s / sqrt(d_head) = SHARP`` (TransformerLens scales by sqrt(d_head))."""
    return (SHARP * model.cfg.d_head**0.5) ** 0.5


def _set_head(model, layer: int, head: int, q: list, k: list, v: list, o: list) -> None:
    """Set entries ``(residual dim, head dim, value)`` of W_Q, W_K, W_V and ``(head dim, residual dim, value)`` of W_O."""
    attn = model.blocks[layer].attn
    with torch.no_grad():
        for weight, entries in ((attn.W_Q, q), (attn.W_K, k), (attn.W_V, v), (attn.W_O, o)):
            for a, b, value in entries:
                weight[head, a, b] = value


def _copy(block: slice, n: int, into: slice, gain: float) -> tuple[list, list]:
    """W_V entries reading one-hot ``block`` and W_O entries writing it, times ``gain``, into ``into``."""
    v = [(block.start + i, i, 1.0) for i in range(n)]
    o = [(i, into.start + i, gain) for i in range(n)]
    return v, o


# ---- induction ----------------------------------------------------------------------------------

IND_VOCAB, IND_PERIOD = 12, 6  # tokens 0..10, BOS = 11; n_ctx = 1 + 2 * period


def _prev_token_qk(lay, n_ctx: int, s: float) -> tuple[list, list]:
    """Queries and keys by position: the query at ``t`` scores the key at ``t - 1`` (``t = 0``: itself)."""
    q = [(lay["pos"].start + t, t, s) for t in range(n_ctx)]  # slot t: "the key at t - 1" (t = 0: the key at 0)
    k = [(lay["pos"].start + t, t + 1, s) for t in range(n_ctx - 1)] + [(lay["pos"].start, 0, s)]
    return q, k


def _induction_model():
    n_ctx = 1 + 2 * IND_PERIOD
    model, lay = _blank(IND_VOCAB, n_ctx, d_head=max(IND_VOCAB, n_ctx + 1))
    s = _score_entry(model)
    q, k = _prev_token_qk(lay, n_ctx, s)
    v, o = _copy(lay["tok"], IND_VOCAB - 1, lay["mid"], 1.0)  # BOS is not copied
    _set_head(model, 0, 0, q, k, v, o)  # previous-token head -> MID
    _set_head(model, 0, 1, q, k, v, [])  # dead: attends like 0.0, writes nothing
    q = [(lay["tok"].start + i, i, s) for i in range(IND_VOCAB - 1)]  # the current token ...
    k = [(lay["mid"].start + i, i, s) for i in range(IND_VOCAB - 1)]  # ... against the previous token of each key
    v, o = _copy(lay["tok"], IND_VOCAB - 1, lay["ans"], GAIN)
    _set_head(model, 1, 0, q, k, v, o)  # induction head -> ANS
    _set_head(model, 1, 1, q, k, v, [])  # dead
    return model.eval()


def _induction_data(n: int = 256, seed: int = 0) -> Dataset:
    """``BOS r r``, ``r`` distinct random tokens; the next token scored on the second copy."""
    g = torch.Generator().manual_seed(seed)
    segment = torch.argsort(torch.rand(n, IND_VOCAB - 1, generator=g), dim=1)[:, :IND_PERIOD]  # [n, L] distinct
    bos = torch.full((n, 1), IND_VOCAB - 1)
    tokens = torch.cat([bos, segment, segment], dim=1)  # [n, 1 + 2L]
    targets = torch.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, IND_PERIOD + 1: 2 * IND_PERIOD] = True  # second copy, all but its last token
    return Dataset(tokens=tokens, targets=targets, loss_mask=mask, name="induction (known)")


_INDUCTION_EDGES = frozenset({
    (Head(1, 0), Output(), "in"),
    (Embed(), Head(1, 0), "q"),
    (Head(0, 0), Head(1, 0), "k"),
    (Embed(), Head(1, 0), "v"),
    (Embed(), Head(0, 0), "v"),
})

# ---- two-step lookup ---------------------------------------------------------------------------

LOOKUP_N = 8  # tokens 0..7 are positions 0..7


def _lookup_model():
    n = LOOKUP_N
    model, lay = _blank(n, n, d_head=n)
    s = _score_entry(model)
    k = [(lay["pos"].start + t, t, s) for t in range(n)]  # keys: the position
    q = [(lay["tok"].start + i, i, s) for i in range(n)]  # query: the token, read as a position
    v, o = _copy(lay["tok"], n, lay["mid"], 1.0)
    _set_head(model, 0, 0, q, k, v, o)  # x[x[t]] -> MID
    _set_head(model, 0, 1, q, k, v, [])  # dead
    q = [(lay["mid"].start + i, i, s) for i in range(n)]  # query: MID, read as a position
    v, o = _copy(lay["tok"], n, lay["ans"], GAIN)
    _set_head(model, 1, 0, q, k, v, o)  # x[MID] -> ANS
    _set_head(model, 1, 1, q, k, v, [])  # dead
    return model.eval()


def _lookup_data(n: int = 256, seed: int = 0) -> Dataset:
    """Uniform random tokens; the target at the last position ``T`` is ``x[x[x[T]]]``."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, LOOKUP_N, (n, LOOKUP_N), generator=g)
    rows = torch.arange(n)
    first = tokens[rows, tokens[:, -1]]  # x[x[T]]
    answer = tokens[rows, first]  # x[x[x[T]]]
    targets = torch.zeros_like(tokens)
    targets[:, -1] = answer
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, -1] = True
    return Dataset(tokens=tokens, targets=targets, loss_mask=mask, name="two-step lookup (known)")


_LOOKUP_EDGES = frozenset({
    (Head(1, 0), Output(), "in"),
    (Head(0, 0), Head(1, 0), "q"),
    (Embed(), Head(1, 0), "v"),
    (Embed(), Head(0, 0), "q"),
    (Embed(), Head(0, 0), "v"),
})

_KNOWN = {
    "induction-known": KnownCircuit(
        "induction-known", "previous-token head 0.0 feeds the key of induction head 1.0", _induction_model,
        _induction_data, _INDUCTION_EDGES),
    "lookup-known": KnownCircuit(
        "lookup-known", "two-step lookup: head 0.0 follows the pointer x[T], head 1.0 follows x[x[T]]",
        _lookup_model, _lookup_data, _LOOKUP_EDGES),
}


def available() -> list[str]:
    """The names of the known-circuit models."""
    return sorted(_KNOWN)


def get(name: str) -> KnownCircuit:
    """The known circuit ``name`` (model builder, dataset generator, true edges).

    Raises:
        ScrubError: no known circuit has that name (the message lists them)."""
    if not isinstance(name, str) or name not in _KNOWN:
        raise ScrubError(f"no known-circuit model named {name!r}; available: {available()}")
    return _KNOWN[name]


def load(name: str):
    """The hand-set ``HookedTransformer`` ``name`` (in eval mode, on the CPU)."""
    return get(name).model()


def dataset(name: str, n: int = 256, seed: int = 0) -> Dataset:
    """``n`` rows of the task of model ``name``."""
    return get(name).data(n, seed)


def circuit(name: str) -> frozenset:
    """The true edges of model ``name``: ``(child, parent, port)``, the parent ``Output()`` for the logits."""
    return get(name).edges


def visible_edges(h) -> frozenset:
    """A hypothesis's edges as ``(child, parent, port)``, without those from `PosEmbed` (see the module docstring)."""
    return frozenset(
        (e.child.component, Output() if e.parent.is_output else e.parent.component, e.port)
        for e in h.edges if not isinstance(e.child.component, PosEmbed)
    )
