"""Hand-built models whose circuits are known exactly, for checking the redundancy analyses.

Every weight is set by hand (no training), so what each head does, and how the heads combine, is
known in advance:

* `redundant` (OR-like, serial backup): head A = Head(0.0) and head B = Head(1.0) are both
  previous-token copy heads. Each adds ``k`` to the logit of the previous token, so either alone
  already makes the loss ~0 and cross-entropy saturates: both are no better than one. Removing one
  (resampling its output from a random row) costs ~log 2 nats (the right token and the random
  row's token tie at k), removing both ~2k nats (both come from the same random row): strongly
  super-additive. With A knocked out, resampling B's direct path costs ~2k - log 2 instead of
  ~log 2, so B's direct effect rises. B never reads A: the OR and the rise come only from the
  saturation of cross-entropy (with a metric linear in the logits the pair is additive).
* `independent` (additive): the same two heads, but A copies only at odd positions and B only at
  even ones (elsewhere they attend to a BOS token whose value is zero, so they write nothing).
  Each position's loss depends on one head only, so the per-row loss of removing both is exactly
  the sum of the two single removals, and knocking A out leaves B's direct effect unchanged.
* `single`: A alone copies; every other head writes nothing.
* `self_repair` (a backup that reads the head it backs up, like the IOI paper's backup name
  movers): A copies the previous token; B = Head(1.0) would copy it too, but B's query reads A's
  output and B attends to the BOS (writing nothing) whenever A already wrote the right token.
  In the clean model B writes nothing; with A knocked out (resampled on every path, into B's
  query too), A writes a wrong token, B switches on and copies the right one.
* `induction_and` (AND-like): the two-layer induction circuit. A = Head(0.0) writes the previous
  token into a subspace that only the key of B = Head(1.0), an induction head, reads; B copies the
  token after the previous occurrence of the current token. Neither works without the other.

Every model also has heads that write nothing (``W_O = 0``; their queries, keys and values are
not zero): ``Z = Head(0.1)`` is claimed in the hypotheses as a claim the model provably does not
use.

Residual stream layout (``normalization_type=None``, attention only):

    [TOK: one-hot token (vocab incl. BOS)] [POS: one-hot position] [PREV: V] [ANS: V]

``W_U`` reads only ANS (``W_U[ANS_v, v] = 1``), so the direct paths of the embeddings and of
anything writing TOK / POS / PREV do not touch the logits.
"""

from __future__ import annotations

from typing import Iterable, Optional

import attrs
import torch

from scrub import EXACT, Dataset, Embed, Head, Hypothesis
from scrub.tasks import induction
from scrub.zoo.known import hand_set_model

__all__ = [
    "Known",
    "prev_token_model",
    "prev_token_data",
    "redundant",
    "independent",
    "single",
    "induction_and",
    "self_repair",
    "copy_hypothesis",
]

VOCAB = 10  # real tokens 0..VOCAB-1
N_POS = 8
GAIN = 20.0  # logit a copy head adds to the token it copies
SHARP = 40.0  # attention score of the attended key (others score 0)


@attrs.frozen(eq=False)
class Known:
    """A hand-built model with its dataset, the hypothesis that describes it, and the answer."""

    model: object
    data: Dataset
    hypothesis: Hypothesis
    pair: tuple[str, str]
    expected: str  # the verdict the redundancy check must give: "OR-like (backup)", "additive", "AND-like"


def _layout(vocab: int, n_ctx: int) -> dict[str, slice]:
    """Residual subspaces: TOK has vocab + 1 dims (the last is BOS)."""
    tok = slice(0, vocab + 1)
    pos = slice(tok.stop, tok.stop + n_ctx)
    prev = slice(pos.stop, pos.stop + vocab)
    ans = slice(prev.stop, prev.stop + vocab)
    return {"tok": tok, "pos": pos, "prev": prev, "ans": ans, "d_model": ans.stop}


def _blank_model(vocab: int, n_ctx: int, n_layers: int = 2, n_heads: int = 2, d_head: Optional[int] = None):
    """An attention-only HookedTransformer, no normalisation, every parameter zero (`hand_set_model`)."""
    lay = _layout(vocab, n_ctx)
    blocks = {k: v for k, v in lay.items() if isinstance(v, slice)}
    model = hand_set_model(blocks, d_vocab=vocab + 1, n_ctx=n_ctx, d_head=d_head or max(vocab + 1, n_ctx + 1),
                           n_layers=n_layers, n_heads=n_heads)  # + BOS
    return model.eval(), lay


def _scale(model) -> float:
    """Query/key entries ``s`` such that a matching query-key pair scores ``SHARP`` after TL's scaling."""
    return (SHARP * model.cfg.d_head**0.5) ** 0.5


def _prev_token_head(model, lay, layer: int, head: int, on: Iterable[int], write: str, gain: float) -> None:
    """Head (layer, head): at positions in ``on`` attend to the previous position, elsewhere to
    position 0 (the BOS, whose value is zero); copy the attended token into subspace ``write``."""
    cfg = model.cfg
    attn = model.blocks[layer].attn
    s = _scale(model)
    on = set(on)
    pos0 = lay["pos"].start
    vocab = cfg.d_vocab - 1
    with torch.no_grad():
        for t in range(cfg.n_ctx):
            # query slot t + 1 means "the key at t"; slot 0 means "the BOS at position 0"
            attn.W_Q[head, pos0 + t, (t if t in on and t >= 1 else 0)] = s
            attn.W_K[head, pos0 + t, t + 1] = s
        attn.W_K[head, pos0 + 0, 0] = s
        tok0 = lay["tok"].start
        attn.W_V[head, tok0 + torch.arange(vocab), torch.arange(vocab)] = 1.0  # BOS (row vocab) -> 0
        w0 = lay[write].start
        attn.W_O[head, torch.arange(vocab), w0 + torch.arange(vocab)] = gain


def _dead_head(model, lay, layer: int, head: int) -> None:
    """A head with live queries, keys and values (copying the previous token) but ``W_O = 0``."""
    _prev_token_head(model, lay, layer, head, range(model.cfg.n_ctx), "ans", 0.0)
    with torch.no_grad():
        model.blocks[layer].attn.W_O[head] = 0.0


def prev_token_model(on_a: Optional[Iterable[int]], on_b: Optional[Iterable[int]], *, vocab: int = VOCAB,
                     n_ctx: int = N_POS, gain: float = GAIN):
    """Two layers of two heads. Head(0.0) (A) and Head(1.0) (B) copy the previous token into ANS
    at the positions in ``on_a`` / ``on_b`` (``None``: the head writes nothing); Head(0.1) and
    Head(1.1) write nothing."""
    model, lay = _blank_model(vocab, n_ctx)
    for layer, on in ((0, on_a), (1, on_b)):
        if on is None:
            _dead_head(model, lay, layer, 0)
        else:
            _prev_token_head(model, lay, layer, 0, on, "ans", gain)
        _dead_head(model, lay, layer, 1)
    return model


def prev_token_data(n: int = 256, *, vocab: int = VOCAB, n_ctx: int = N_POS, seed: int = 0) -> Dataset:
    """BOS, then uniform random tokens; the target at ``t`` is the token at ``t - 1``, scored for
    ``t >= 2`` (at ``t = 1`` the previous token is the BOS)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n, n_ctx), generator=g)
    tokens[:, 0] = vocab  # BOS
    targets = torch.zeros_like(tokens)
    targets[:, 1:] = tokens[:, :-1]
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, 2:] = True
    targets[~mask] = 0
    return Dataset(tokens=tokens, targets=targets, loss_mask=mask, name="previous token")


def copy_hypothesis(name: str, b: bool = True) -> Hypothesis:
    """output <- A = Head(0.0), B = Head(1.0) (if ``b``), Z = Head(0.1) (writes nothing), all EXACT."""
    h = Hypothesis(name)
    out = h.output()
    h.claim(Head(0, 0), EXACT, into=out, name="A")
    if b:
        h.claim(Head(1, 0), EXACT, into=out, name="B")
    h.claim(Head(0, 1), EXACT, into=out, name="Z")
    return h


def redundant(n: int = 256, gain: float = GAIN) -> Known:
    """A and B both copy the previous token everywhere: each alone suffices (OR-like)."""
    every = range(N_POS)
    model = prev_token_model(every, every, gain=gain)
    return Known(model, prev_token_data(n), copy_hypothesis("redundant copy heads"), ("A", "B"), "OR-like (backup)")


def independent(n: int = 256, gain: float = GAIN) -> Known:
    """A copies at odd positions, B at even ones: their effects on the loss add up exactly."""
    model = prev_token_model(range(1, N_POS, 2), range(0, N_POS, 2), gain=gain)
    return Known(model, prev_token_data(n), copy_hypothesis("independent copy heads"), ("A", "B"), "additive")


def single(n: int = 256, gain: float = GAIN) -> Known:
    """Only A copies; B and Z write nothing. The hypothesis claims A and Z."""
    model = prev_token_model(range(N_POS), None, gain=gain)
    return Known(model, prev_token_data(n), copy_hypothesis("one copy head", b=False), ("A", "Z"), "additive")


def induction_and(n: int = 256, *, vocab: int = 20, n_ctx: int = 16, gain: float = GAIN) -> Known:
    """The two-layer induction circuit: A (previous-token head, layer 0) feeds the key of B
    (induction head, layer 1), the token embedding its query and value. The pair checked is
    (tokens, A): two claims on different paths into B, both needed (AND-like)."""
    model, lay = _blank_model(vocab, n_ctx)
    _prev_token_head(model, lay, 0, 0, range(n_ctx), "prev", 1.0)
    _dead_head(model, lay, 0, 1)
    _dead_head(model, lay, 1, 1)
    s = _scale(model)
    attn = model.blocks[1].attn
    idx = torch.arange(vocab)
    with torch.no_grad():
        attn.W_Q[0, lay["tok"].start + idx, idx] = s  # the current token ...
        attn.W_K[0, lay["prev"].start + idx, idx] = s  # ... matches the token before the key
        attn.W_V[0, lay["tok"].start + idx, idx] = 1.0  # copy the key's token
        attn.W_O[0, idx, lay["ans"].start + idx] = gain
    data = induction(n, seed=0, vocab=vocab, n_ctx=n_ctx, min_period=3, max_period=n_ctx // 2, name="induction")
    h = Hypothesis("induction circuit")
    out = h.output()
    b = h.claim(Head(1, 0), EXACT, into=out, name="B")
    h.claim(Embed(), EXACT, into=[(b, "q"), (b, "v")], name="tokens")
    h.claim(Head(0, 0), EXACT, into=(b, "k"), name="A")
    h.claim(Head(0, 1), EXACT, into=out, name="Z")
    return Known(model, data, h, ("tokens", "A"), "AND-like")


def self_repair(n: int = 256, gain: float = GAIN) -> Known:
    """A copies the previous token; B copies it only when A did not (B's query reads A's output).

    B's attention scores (after TL's scaling): the previous position ``SHARP``, the BOS
    ``SHARP / 2``, minus ``1.5 * SHARP`` on the previous position when A's output names the
    token there. So B attends to the BOS (value zero) when A is right and copies when A is wrong.
    """
    vocab, n_ctx = VOCAB, N_POS
    model, lay = _blank_model(vocab, n_ctx, d_head=n_ctx + 1 + vocab)
    _prev_token_head(model, lay, 0, 0, range(n_ctx), "ans", gain)
    _dead_head(model, lay, 0, 1)
    _dead_head(model, lay, 1, 1)
    d_head = model.cfg.d_head
    root = d_head**0.25  # q . k is divided by sqrt(d_head)
    s = SHARP**0.5 * root
    s_bos = (SHARP / 2) ** 0.5 * root
    s_pen = (1.5 * SHARP / gain) ** 0.5 * root  # A writes `gain` into ANS
    attn = model.blocks[1].attn
    pos0, tok0, ans0 = lay["pos"].start, lay["tok"].start, lay["ans"].start
    idx = torch.arange(vocab)
    slot = n_ctx + 1 + idx  # query/key slots of the "A already wrote this token" check
    with torch.no_grad():
        for t in range(n_ctx):
            attn.W_Q[0, pos0 + t, 0] = s_bos  # every query likes the BOS a little ...
            if t >= 1:
                attn.W_Q[0, pos0 + t, t] = s  # ... and the previous position more
            attn.W_K[0, pos0 + t, t + 1] = s
        attn.W_K[0, pos0 + 0, 0] = s_bos
        attn.W_Q[0, ans0 + idx, slot] = -s_pen  # ... unless A wrote the token found there
        attn.W_K[0, tok0 + idx, slot] = s_pen
        attn.W_V[0, tok0 + idx, idx] = 1.0
        attn.W_O[0, idx, ans0 + idx] = gain
    return Known(model, prev_token_data(n), copy_hypothesis("self-repairing backup"), ("A", "B"), "OR-like (backup)")
