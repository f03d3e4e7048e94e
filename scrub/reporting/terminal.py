"""Plain-text tables for the terminal."""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["format_table", "pct", "num"]


def pct(x: float, digits: int = 1) -> str:
    """A fraction as a percentage (``nan`` stays visible)."""
    return "nan" if x is None or math.isnan(x) else f"{100 * x:.{digits}f}%"


def num(x: float, digits: int = 3) -> str:
    return "nan" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> str:
    """Columns padded to their widest cell; the first column left-aligned, the rest right."""
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    out = [title] if title else []
    out += [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)
