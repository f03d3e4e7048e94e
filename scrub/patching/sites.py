"""What a patching sweep patches: sites (a component's activation, optionally at one position).

A `Site` names one cell of a sweep. Its ``kind`` says which activation is replaced:

* ``"head"``: a head's output (``z @ W_O``, TransformerLens ``hook_z`` of that head);
* ``"q"``, ``"k"``, ``"v"``: a head's query, key or value input. The port input enters the head
  through a per-position map (``ln1``, then ``W_Q``/``W_K``/``W_V``), so replacing the input at a
  position is the same as replacing the projected vector there (``hook_q``/``hook_k``/``hook_v``);
* ``"mlp"``: an MLP's output (``hook_mlp_out``);
* ``"resid"``: the residual stream that layer ``layer`` reads (``hook_resid_pre``).

``position`` is ``None`` for "every position at once", else the one position patched.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

import attrs

from scrub.components import MLP, Head
from scrub.errors import ComponentError, DatasetError

__all__ = ["Site", "KINDS", "resolve_sites", "resolve_positions"]

KINDS: tuple[str, ...] = ("head", "q", "k", "v", "mlp", "resid")
_ALIASES = {
    "heads": "head", "head": "head", "head_out": "head", "z": "head",
    "q": "q", "k": "k", "v": "v", "mlp": "mlp", "mlps": "mlp", "mlp_out": "mlp",
    "resid": "resid", "resid_pre": "resid", "residual": "resid",
}


@attrs.frozen(order=True)
class Site:
    """One patched activation: ``kind`` of layer ``layer`` (head ``head`` for head kinds), at
    ``position`` (``None``: every position)."""

    kind: str
    layer: int
    head: Optional[int] = None
    position: Optional[int] = None

    @property
    def component(self) -> Union[Head, MLP, str]:
        """The `scrub` component whose activation this is (``"resid_pre(l)"`` for the stream)."""
        if self.kind in ("head", "q", "k", "v"):
            return Head(self.layer, self.head)
        if self.kind == "mlp":
            return MLP(self.layer)
        return f"resid_pre({self.layer})"

    @property
    def stage(self) -> int:
        """Order along the residual stream (resid_pre of layer l, then its heads, then its MLP)."""
        return 3 * self.layer + {"resid": 0, "q": 1, "k": 1, "v": 1, "head": 1, "mlp": 2}[self.kind]

    def at(self, position: Optional[int]) -> "Site":
        return attrs.evolve(self, position=position)

    def label(self, with_position: bool = True) -> str:
        if self.kind in ("head", "q", "k", "v"):
            base = f"Head({self.layer}.{self.head})" + ("" if self.kind == "head" else f".{self.kind}")
        elif self.kind == "mlp":
            base = f"MLP({self.layer})"
        else:
            base = f"resid_pre({self.layer})"
        if with_position and self.position is not None:
            base += f"@{self.position}"
        return base

    def __str__(self) -> str:
        return self.label()


def _kind(name: str) -> str:
    key = name.lower() if isinstance(name, str) else name
    if key not in _ALIASES:
        raise ComponentError(
            f"unknown component family {name!r} in components=; choose from "
            f"'heads', 'q', 'k', 'v', 'mlp', 'resid', or pass Head(l, h) / MLP(l) / (Head(l, h), port)"
        )
    return _ALIASES[key]


def _check_head(view, component: Head) -> None:
    cfg = view.config
    if component.layer >= cfg.n_layers or component.head >= cfg.n_heads:
        raise ComponentError(
            f"{component} does not exist: the model has layers 0..{cfg.n_layers - 1} and heads "
            f"0..{cfg.n_heads - 1} per layer; fix the component in components="
        )


def _check_mlp(view, component: MLP) -> None:
    cfg = view.config
    if cfg.attn_only:
        raise ComponentError(f"{component} does not exist: the model is attention-only; patch heads or the residual stream")
    if component.layer >= cfg.n_layers:
        raise ComponentError(f"{component} does not exist: the model has layers 0..{cfg.n_layers - 1}")


def _family(view, kind: str) -> list[Site]:
    cfg = view.config
    if kind == "mlp":
        if cfg.attn_only:
            raise ComponentError(
                "components='mlp' asks for MLP outputs, but the model is attention-only; "
                "patch 'heads', 'q', 'k', 'v' or 'resid' instead"
            )
        return [Site("mlp", layer) for layer in range(cfg.n_layers)]
    if kind == "resid":
        return [Site("resid", layer) for layer in range(cfg.n_layers)]
    return [Site(kind, layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]


def resolve_sites(view, components) -> list[Site]:
    """The sites (without positions) a ``components=`` argument names, in model order.

    Accepts a family name (``"heads"``, ``"q"``, ``"k"``, ``"v"``, ``"mlp"``, ``"resid"``), a
    `Head` or `MLP` (its output), a ``(Head, port)`` pair, or a list of these.

    Raises:
        ComponentError: an unknown family, a component the model lacks, a bad port, an empty list.
    """
    items = [components] if isinstance(components, (str, Head, MLP, tuple)) else components
    try:
        items = list(items)
    except TypeError:
        raise ComponentError(
            f"components= must be a family name, a Head/MLP, a (Head, port) pair or a list of them, "
            f"got {type(components).__name__}"
        ) from None
    if not items:
        raise ComponentError("components= is empty; name at least one family or component to patch")
    sites: list[Site] = []
    for item in items:
        if isinstance(item, str):
            sites += _family(view, _kind(item))
        elif isinstance(item, Head):
            _check_head(view, item)
            sites.append(Site("head", item.layer, item.head))
        elif isinstance(item, MLP):
            _check_mlp(view, item)
            sites.append(Site("mlp", item.layer))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Head):
            if item[1] not in ("q", "k", "v"):
                raise ComponentError(
                    f"port {item[1]!r} of {item[0]} does not exist; a head reads through 'q', 'k' or 'v'"
                )
            _check_head(view, item[0])
            sites.append(Site(item[1], item[0].layer, item[0].head))
        else:
            raise ComponentError(
                f"cannot patch {item!r}: pass a family name ('heads', 'q', 'k', 'v', 'mlp', 'resid'), "
                f"Head(l, h), MLP(l) or (Head(l, h), 'q'|'k'|'v')"
            )
    unique = sorted(set(sites), key=lambda s: (s.layer, s.stage, KINDS.index(s.kind), s.head or 0))
    return unique


def resolve_positions(positions, n_pos: int) -> Sequence[Optional[int]]:
    """``"all"`` -> ``[None]`` (every position at once); ``"each"`` -> ``0..n_pos-1``; a list of
    ints -> those positions (each patched on its own; negative ones count from the end).

    Raises:
        DatasetError: a position outside ``0..n_pos-1``, or a value that is none of these.
    """
    if isinstance(positions, str):
        if positions == "all":
            return [None]
        if positions == "each":
            return list(range(n_pos))
        raise DatasetError(f"positions={positions!r}: use 'all', 'each' or a list of positions in 0..{n_pos - 1}")
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = [positions]
    try:
        values = list(positions)
    except TypeError:
        raise DatasetError(
            f"positions={positions!r}: use 'all', 'each' or a list of positions in 0..{n_pos - 1}"
        ) from None
    out: list[Optional[int]] = []
    for p in values:
        if isinstance(p, bool) or not isinstance(p, int):
            raise DatasetError(f"positions= holds {p!r}; positions are ints in 0..{n_pos - 1}")
        if not -n_pos <= p < n_pos:
            raise DatasetError(
                f"position {p} is outside the context of the dataset (0..{n_pos - 1}); "
                f"patch positions inside the sequences"
            )
        out.append(p % n_pos)
    if not out:
        raise DatasetError("positions= is empty; pass 'all', 'each' or at least one position")
    return sorted(set(out))


def expand(sites: Iterable[Site], positions: Sequence[Optional[int]]) -> list[Site]:
    """Every site at every position (sites first, then positions)."""
    return [site.at(p) for site in sites for p in positions]
