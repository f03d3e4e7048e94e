"""`Store`: a directory of finished cells, each one file, written atomically and never overwritten.

Layout of a store directory (``store="runs/"``)::

    runs/store.json              format and the scrub version that created the store
    runs/cells/ab/ab12....pt     one cell: per-row values (tensors) and its metadata (JSON text)

A cell file appears under its final name only when it is complete: it is written to a temporary
file in the same folder (``.ab12....<random>.tmp``), flushed to disk, then hard-linked to its
name, which fails when that name already exists. A crash mid-write leaves a temporary file that
is never read as a cell. Two writers of the same cell: the second finds the first one's file;
equal contents (bit for bit) are fine, different contents are refused (`StoreError`).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import attrs
import torch
from torch import Tensor

from scrub.errors import OptionsError, ScrubError
from scrub.store.keys import scrub_version

__all__ = ["Store", "Cell", "StoreError", "STORE_FORMAT", "as_store"]

STORE_FORMAT = 1
TENSORS = ("reference", "model", "base", "scrub", "weights")


class StoreError(ScrubError, ValueError):
    """A result store cannot be used (incompatible version, not writable, conflicting or damaged cell)."""


def _compatible(a: str, b: str) -> bool:
    """Same major.minor version: cells keep their meaning within a minor series."""
    return a.split(".")[:2] == b.split(".")[:2]


@attrs.frozen(eq=False)
class Cell:
    """One stored cell: the per-row values of one hypothesis with one seed, and their metadata.

    Attributes:
        key: the cell's address (`scrub.store.keys.cell_key` of ``meta["key_parts"]``).
        meta: JSON-ready metadata: ``key_parts`` (the fingerprints), names (hypothesis, baseline,
            dataset, metric, engine), ``seed``, ``lower_is_better``, ``class_sizes`` and a
            ``summary`` of means for this seed.
        reference: ``[n]`` reference rows; model: ``[n]`` unscrubbed values; base, scrub: ``[n]``
            values of the baseline and of the hypothesis with this seed; weights: ``[n]`` or None.
    """

    key: str
    meta: dict
    reference: Tensor
    model: Tensor
    base: Tensor
    scrub: Tensor
    weights: Optional[Tensor] = None

    def same_values(self, other: "Cell") -> bool:
        """Whether the two cells hold the same tensors, bit for bit (NaN included)."""
        for name in TENSORS:
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None):
                return False
            if a is not None and (a.dtype != b.dtype or a.shape != b.shape or
                                  a.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                                  != b.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()):
                return False
        return True


@attrs.frozen
class Store:
    """A result store in a user-named directory. Build it with `Store.open` (or pass the path as
    ``store=`` to an entry point): that creates the directory, checks it is writable and that an
    existing store was written by a compatible scrub, all before any forward pass."""

    path: Path = attrs.field(converter=Path)

    @classmethod
    def open(cls, path: "str | os.PathLike[str]") -> "Store":
        """Open (or create) the store at ``path``.

        Raises:
            StoreError: the directory cannot be created or written, it is not a store, or it holds
                a store of an incompatible scrub version (both versions named).
        """
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise StoreError(f"store={str(path)!r} is a file, not a directory; name a directory for the result store")
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=root)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise StoreError(
                f"store={str(path)!r} is not a writable directory ({err.strerror or err}); "
                f"name a directory you can write to, or fix its permissions"
            ) from None
        info_path, here = root / "store.json", scrub_version()
        if info_path.exists():
            try:
                info = json.loads(info_path.read_text(encoding="utf-8"))
                found, fmt = str(info["scrub"]), int(info["format"])
            except (ValueError, KeyError, TypeError) as err:
                raise StoreError(f"{info_path} is not a scrub store description ({err}); "
                                 f"name another directory for the store") from None
            if fmt != STORE_FORMAT or not _compatible(found, here):
                raise StoreError(
                    f"store {str(root)!r} was written by scrub {found} (store format {fmt}); this is scrub "
                    f"{here} (store format {STORE_FORMAT}), whose cells are not comparable with it; use a new "
                    f"store directory, or scrub {found} to read this one"
                )
        else:
            _write_bytes(info_path, (json.dumps({"format": STORE_FORMAT, "scrub": here}, indent=2) + "\n").encode(),
                         replace=True)
        return cls(root)

    def cell_path(self, key: str) -> Path:
        return self.path / "cells" / key[:2] / f"{key}.pt"

    def has(self, key: str) -> bool:
        return self.cell_path(key).is_file()

    def read(self, key: str) -> Optional[Cell]:
        """The finished cell at ``key``, or None when there is none (temporary files never count).

        Raises:
            StoreError: the file is damaged (delete it; the cell is then recomputed)."""
        path = self.cell_path(key)
        if not path.is_file():
            return None
        return _load(path, key)

    def write(self, cell: Cell) -> bool:
        """Store ``cell`` atomically; True when written, False when an equal cell was there already.

        Raises:
            StoreError: a different cell holds the same key (never overwritten)."""
        path = self.cell_path(cell.key)
        buffer = io.BytesIO()
        payload = {name: getattr(cell, name) for name in TENSORS if getattr(cell, name) is not None}
        payload = {k: v.detach().cpu().contiguous() for k, v in payload.items()}
        payload["meta"] = json.dumps(cell.meta, sort_keys=True)
        torch.save(payload, buffer)
        if _write_bytes(path, buffer.getvalue(), replace=False):
            return True
        existing = _load(path, cell.key)
        if not existing.same_values(cell):
            raise StoreError(
                f"cell {cell.key} ({cell.meta.get('hypothesis')!r}, seed {cell.meta.get('seed')}) is already in the "
                f"store at {path} with different values; a cell is never overwritten. The same key with other "
                f"numbers means the computation is not reproducible here (another device or library version?); "
                f"move the old file away to keep both, or use a separate store"
            )
        return False

    def cells(self) -> Iterator[Cell]:
        """Every finished cell, in key order."""
        for path in sorted((self.path / "cells").glob("*/*.pt")):
            yield _load(path, path.stem)


def _load(path: Path, key: str) -> Cell:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(payload["meta"])
        return Cell(key=key, meta=meta, **{name: payload.get(name) for name in TENSORS})
    except Exception as err:  # noqa: BLE001 - any failure to read means the file is damaged
        raise StoreError(
            f"cell file {path} is damaged ({type(err).__name__}: {err}); delete it and run again (the cell is "
            f"recomputed)"
        ) from None


def _write_bytes(path: Path, data: bytes, *, replace: bool) -> bool:
    """Write ``data`` to ``path`` through a temporary file; False when ``replace`` is off and the
    name exists already (then nothing is changed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a shared store needs the usual permissions
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # atomic, and refuses an existing name
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if path.exists():
                return False
            os.rename(tmp, path)
            return True
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def as_store(value: Any) -> Optional[Store]:
    """``None``, a path or a `Store` -> a checked `Store` (or None)."""
    if value is None or isinstance(value, Store):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Store.open(value)
    raise OptionsError(f"store={value!r} ({type(value).__name__}) is not allowed: store must be a directory path "
                     f"(str or pathlib.Path), a scrub.store.Store, or None for no store")
