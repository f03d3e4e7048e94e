"""Dataset generators for the tasks that `scrub`'s zoo models are trained on.

Each generator returns a `scrub.Dataset` and takes a ``seed``; the same arguments give a
bit-identical dataset.
"""

from scrub.tasks.induction import induction
from scrub.tasks.ioi import ioi, ioi_features, ioi_word_tokenizer
from scrub.tasks.parens import parens

__all__ = ["induction", "parens", "ioi", "ioi_features", "ioi_word_tokenizer"]
