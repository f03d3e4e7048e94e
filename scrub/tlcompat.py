"""Which TransformerLens line is installed: 3.x (``HookedTransformer``) or 4.x (``TransformerBridge`` only).

TransformerLens 4 removed ``HookedTransformer``, ``HookedTransformerConfig``, ``components``,
``loading_from_pretrained`` and ``utils``; importing ``HookedTransformer`` raises an ImportError.
Every code path of `scrub` that needs a ``HookedTransformer`` asks `require_hooked_transformer`,
which returns the class or raises `NeedsHookedTransformerError` naming what needed it and the fix
(the TransformerLens 3 line, or a HuggingFace model / ``TransformerBridge``). A ground-layer
module (it imports only `scrub.errors`), so the zoo and the model loaders can both use it.
"""

from __future__ import annotations

import functools

from scrub.errors import UnsupportedModelError

__all__ = [
    "NeedsHookedTransformerError",
    "hooked_transformer_available",
    "require_hooked_transformer",
    "transformer_lens_version",
]


class NeedsHookedTransformerError(UnsupportedModelError):
    """The code path needs a TransformerLens ``HookedTransformer``, which TransformerLens >= 4 has not."""


def transformer_lens_version() -> str:
    """The installed TransformerLens version (``"none"`` when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformer-lens")
    except PackageNotFoundError:  # pragma: no cover - a dependency
        return "none"


@functools.lru_cache(maxsize=None)
def hooked_transformer_available() -> bool:
    """Whether the installed TransformerLens has ``HookedTransformer`` (3.x: yes; 4.x: no)."""
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


def require_hooked_transformer(what: str):
    """The ``HookedTransformer`` class, for ``what`` (a short description of the caller's need).

    Raises:
        NeedsHookedTransformerError: this TransformerLens has no ``HookedTransformer`` (4.x); the
            message names ``what`` and the fix.
    """
    if not hooked_transformer_available():
        raise NeedsHookedTransformerError(
            f"{what} needs a TransformerLens HookedTransformer, which TransformerLens "
            f"{transformer_lens_version()} no longer has (removed in 4.0); install the TransformerLens 3 line "
            f"(pip install -c constraints.txt 'transformer-lens<4'), or pass a HuggingFace causal LM or a "
            f"TransformerBridge instead"
        )
    from transformer_lens import HookedTransformer

    return HookedTransformer
