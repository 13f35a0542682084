"""Where a store's batches are: listing, ids, completeness, batch files, links out of the store.

The layout (DESIGN.md, "Batch store")::

    STORE/batches/<id>/data.<fmt>        features + target column
    STORE/batches/<id>/queries.<fmt>     features only (optional)
    STORE/batches/<id>/_SUCCESS          written last by the producer

with ``<fmt>`` one of :data:`FORMATS`. Listing uses ``os.scandir`` (names and types without a
stat per entry; only links are resolved), so a step's listing stays cheap at 10⁴ batches.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BatchStoreError, BatchStoreWarning

__all__ = ["SUCCESS_MARKER", "QUERIES_MARKER", "BATCHES_DIR", "FORMATS", "BatchInfo", "list_batches", "find_batch",
           "checked_id", "batch_file", "inside"]

SUCCESS_MARKER = "_SUCCESS"
"""The file a producer writes last into a batch directory: a batch without it is incomplete."""

QUERIES_MARKER = "_QUERIES"
"""The file a producer writes when a batch's queries are complete and its labels are not in yet:
the batch then holds ``queries.<fmt>``; ``data.<fmt>`` and ``_SUCCESS`` follow with the labels."""

BATCHES_DIR = "batches"

FORMATS: tuple[str, ...] = ("parquet", "csv")
"""The file formats of a batch's files, by file suffix: ``data.<fmt>``, ``queries.<fmt>``."""

_ID_PATTERN = re.compile(r"[0-9]+", re.ASCII)


@dataclass(frozen=True)
class BatchInfo:
    """Where a batch is and whether its producer finished it.

    Attributes
    ----------
    id : int
        The batch id (the directory name without zero padding).
    path : Path
        The batch directory.
    complete : bool
        Whether ``_SUCCESS`` exists in it.
    """

    id: int
    path: Path
    complete: bool

    @property
    def queries_ready(self) -> bool:
        """Whether ``_QUERIES`` exists in it: its queries are complete, its labels may not be in
        (checked when asked, so a listing costs no extra file look-up per batch)."""
        return (self.path / QUERIES_MARKER).is_file()



def list_batches(root: Path, batches_dir: Path, *, stacklevel: int = 2) -> list[BatchInfo]:
    """Every batch under ``batches_dir`` (of the store ``root``), complete or not, sorted by id.

    A directory whose name is not a batch id is skipped with a :class:`BatchStoreWarning`
    attributed ``stacklevel`` frames up; a plain file silently. No ``batches_dir``, a link to a
    directory outside it, or two directories with the same id are a :class:`BatchStoreError`.
    """
    if not batches_dir.is_dir():
        raise BatchStoreError(
            f"no batch store at {root}: expected {batches_dir}/<id>/data.parquet; "
            "create one with `cara-mlflow make-stream` or your producer"
        )
    by_id: dict[int, Path] = {}
    with os.scandir(batches_dir) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        batch_id = _entry_id(entry, batches_dir, stacklevel + 1)
        if batch_id is None:
            continue
        path = Path(entry.path)
        if entry.is_symlink() and not inside(path, batches_dir):
            raise BatchStoreError(
                f"batch {batch_id}: {path} is a link to {path.resolve()}, outside the store "
                f"{root}; expected a directory inside it: copy the batch in"
            )
        if batch_id in by_id:
            raise BatchStoreError(
                f"batch {batch_id} has two directories in {batches_dir}: "
                f"{by_id[batch_id].name!r} and {path.name!r}; remove or merge one of them"
            )
        by_id[batch_id] = path
    return [
        BatchInfo(id=i, path=by_id[i], complete=(by_id[i] / SUCCESS_MARKER).is_file())
        for i in sorted(by_id)
    ]


def _entry_id(entry: os.DirEntry, batches_dir: Path, stacklevel: int) -> int | None:
    """The batch id a directory entry names; None (with a warning if a directory) otherwise."""
    if not entry.is_dir():
        return None
    if not _ID_PATTERN.fullmatch(entry.name):
        warnings.warn(
            f"ignoring directory {entry.name!r} in {batches_dir}: "
            "its name is not a batch id (a non-negative integer)",
            BatchStoreWarning,
            stacklevel=stacklevel,
        )
        return None
    return int(entry.name)


def find_batch(infos: list[BatchInfo], batch_id: int, batches_dir: Path) -> BatchInfo:
    """The :class:`BatchInfo` of ``batch_id`` among ``infos`` (a listing of ``batches_dir``)."""
    for info in infos:
        if info.id == batch_id:
            return info
    held = (
        f"it holds {len(infos)} batches, ids {infos[0].id} to {infos[-1].id}"
        if infos
        else "it holds no batch yet"
    )
    raise BatchStoreError(f"batch {batch_id} does not exist in {batches_dir}; {held}")


def checked_id(batch_id: Any) -> int:
    """``batch_id`` as an int; a bool, a non-integer or a negative number is an error."""
    if isinstance(batch_id, (bool, np.bool_)) or not isinstance(batch_id, (int, np.integer)):
        raise TypeError(f"a batch id must be an integer, got {batch_id!r}")
    if batch_id < 0:
        raise BatchStoreError(f"batch {batch_id}: a batch id is a non-negative integer")
    return int(batch_id)


def batch_file(info: BatchInfo, kind: str, *, required: bool) -> Path | None:
    """The ``<kind>.<fmt>`` file of a batch: None if absent (an error if ``required``).

    A file that links out of the batch directory, or two files of one kind in different
    formats, are a :class:`BatchStoreError`.
    """
    found = [info.path / f"{kind}.{fmt}" for fmt in FORMATS]
    found = [p for p in found if p.is_file()]
    for p in found:
        if not inside(p, info.path):
            raise BatchStoreError(
                f"batch {info.id}: {p.name} is a link to {p.resolve()}, outside the batch "
                f"directory {info.path}; expected a file inside it: copy the file in"
            )
    if len(found) > 1:
        raise BatchStoreError(
            f"batch {info.id} has both {' and '.join(p.name for p in found)} in {info.path}; "
            "remove all but one"
        )
    if not found:
        if required:
            raise BatchStoreError(
                f"batch {info.id} has no data file in {info.path}: expected "
                f"{' or '.join(f'{kind}.{fmt}' for fmt in FORMATS)}"
            )
        return None
    return found[0]


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves (symlinks followed) to ``root`` or below it."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
