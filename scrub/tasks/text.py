"""Text to token ids for the tasks: a word-level tokenizer for offline tests, and one calling
convention over HuggingFace tokenizers, objects with ``encode`` and plain callables."""

from __future__ import annotations

import re
import string
from typing import Any, Callable, Iterable

import torch

from scrub.errors import DatasetError

__all__ = ["WordTokenizer", "is_single_token", "encoder", "special_id", "pieces"]

_PIECE_RE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")


def pieces(text: str) -> list[str]:
    """``text`` split like GPT-2's pre-tokenizer: words with their leading space, punctuation, digits."""
    return _PIECE_RE.findall(text)


class WordTokenizer:
    """A deterministic word-level tokenizer for offline tests (GPT-2-like pre-tokenization).

    Text splits like GPT-2's pre-tokenizer: a word with its leading space (``" Mary"``), a run of
    punctuation (``","``), digits. A piece in the vocabulary is one token; any other piece falls
    back to one token per character (so an unknown word is several tokens, as with BPE). Id 0 is
    ``"<|endoftext|>"``, used as BOS, EOS and padding (like GPT-2).

    Args:
        words: the pieces that are single tokens (with their leading space where they have one).
    """

    special = "<|endoftext|>"

    def __init__(self, words: Iterable[str]) -> None:
        chars = list(string.ascii_letters + string.digits + " .,;:'!?-")
        vocab = [self.special] + sorted(set(words) - {self.special} - set(chars)) + chars
        self.vocab: tuple[str, ...] = tuple(vocab)
        self._ids = {piece: i for i, piece in enumerate(self.vocab)}
        self.bos_token_id = self.eos_token_id = self.pad_token_id = 0

    vocab_size = property(lambda self: len(self.vocab))

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text`` (no BOS is added)."""
        ids: list[int] = []
        for piece in pieces(text):
            if piece in self._ids:
                ids.append(self._ids[piece])
            else:
                for char in piece:
                    if char not in self._ids:
                        raise DatasetError(
                            f"WordTokenizer: character {char!r} of {text!r} is not in the vocabulary "
                            f"(letters, digits and basic punctuation only)"
                        )
                    ids.append(self._ids[char])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size})"


def encoder(tokenizer: Any) -> Callable[[str], list[int]]:
    """``text -> list of ids`` for a HuggingFace tokenizer, an object with ``encode``, or a callable."""
    encode = getattr(tokenizer, "encode", None)
    if encode is None:
        if not callable(tokenizer):
            raise DatasetError(
                f"ioi(): tokenizer must have an encode(str) -> list[int] method or be a callable "
                f"str -> list[int], got {type(tokenizer).__name__}"
            )
        encode = tokenizer
    try:
        encode("a", add_special_tokens=False)
        call = lambda text: encode(text, add_special_tokens=False)  # noqa: E731
    except TypeError:
        call = encode

    def run(text: str) -> list[int]:
        ids = call(text)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        ids = [int(i) for i in ids]
        if any(i < 0 for i in ids):
            raise DatasetError(f"ioi(): the tokenizer returned negative ids for {text!r}: {ids}")
        return ids

    return run


def special_id(tokenizer: Any, *names: str) -> int:
    for name in names:
        value = getattr(tokenizer, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def is_single_token(tokenizer: Any, word: str) -> bool:
    """Whether ``word`` (give it its leading space, e.g. ``" Mary"``) is one token."""
    return len(encoder(tokenizer)(word)) == 1
