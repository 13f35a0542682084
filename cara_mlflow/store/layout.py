"""Where a store's batches are: listing, ids, completeness, batch files, links out of the store.

The layout (DESIGN.md, "Batch store")::

    STORE/batches/<id>/data.<fmt>        features + target column
    STORE/batches/<id>/queries.<fmt>     features only (optional)
    STORE/batches/<id>/_SUCCESS          written last by the producer

with ``<fmt>`` one of :data:`FORMATS`, or ``data/`` (``queries/``) a folder of parquet part files.
A local listing uses ``os.scandir`` (names and types without a stat per entry; only links are
resolved), so a step's listing stays cheap at 10⁴ batches. On an object store one recursive
listing of ``batches/`` gives the folders and their ``_SUCCESS`` markers: one request per 1000
objects, part files included (a known cost at many batches of many parts).
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
from .location import ObjectPath, is_remote, part_files

__all__ = ["SUCCESS_MARKER", "QUERIES_MARKER", "BATCHES_DIR", "FORMATS", "BatchInfo", "list_batches", "find_batch",
           "checked_id", "batch_file", "dataset_parts", "inside"]

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
    path : Path or ObjectPath
        The batch directory (a folder on an object store for a remote store).
    complete : bool
        Whether ``_SUCCESS`` exists in it.
    """

    id: int
    path: Path | ObjectPath
    complete: bool

    @property
    def queries_ready(self) -> bool:
        """Whether ``_QUERIES`` exists in it: its queries are complete, its labels may not be in
        (checked when asked, so a listing costs no extra file look-up per batch)."""
        return (self.path / QUERIES_MARKER).is_file()



def list_batches(root, batches_dir, *, stacklevel: int = 2) -> list[BatchInfo]:
    """Every batch under ``batches_dir`` (of the store ``root``), complete or not, sorted by id.

    A directory whose name is not a batch id is skipped with a :class:`BatchStoreWarning`
    attributed ``stacklevel`` frames up; a plain file silently. No ``batches_dir``, a link to a
    directory outside it, or two directories with the same id are a :class:`BatchStoreError`.
    On an object store one listing gives the folders and their ``_SUCCESS`` markers.
    """
    if not batches_dir.is_dir():
        raise BatchStoreError(
            f"no batch store at {root}: expected {batches_dir}/<id>/data.parquet; "
            "create one with `cara-mlflow make-stream` or your producer"
        )
    if is_remote(batches_dir):
        folders, complete = _remote_folders(batches_dir)
    else:
        folders, complete = _local_folders(root, batches_dir), None
    by_id: dict[int, object] = {}
    for name, path in folders:
        batch_id = _folder_id(name, batches_dir, stacklevel + 1)
        if batch_id is None:
            continue
        if batch_id in by_id:
            raise BatchStoreError(
                f"batch {batch_id} has two directories in {batches_dir}: "
                f"{by_id[batch_id].name!r} and {path.name!r}; remove or merge one of them"
            )
        by_id[batch_id] = path
    return [
        BatchInfo(id=i, path=by_id[i],
                  complete=(by_id[i].name in complete) if complete is not None
                  else (by_id[i] / SUCCESS_MARKER).is_file())
        for i in sorted(by_id)
    ]


def _local_folders(root: Path, batches_dir: Path) -> list[tuple[str, Path]]:
    """(name, path) of the directories under ``batches_dir``, links out of the store refused."""
    with os.scandir(batches_dir) as scan:
        entries = sorted((e for e in scan if e.is_dir()), key=lambda entry: entry.name)
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink() and _ID_PATTERN.fullmatch(entry.name) and not inside(path, batches_dir):
            raise BatchStoreError(
                f"batch {int(entry.name)}: {path} is a link to {path.resolve()}, outside the store "
                f"{root}; expected a directory inside it: copy the batch in"
            )
    return [(e.name, Path(e.path)) for e in entries]


def _remote_folders(batches_dir: ObjectPath) -> tuple[list[tuple[str, ObjectPath]], set[str]]:
    """(name, path) of the folders under ``batches_dir`` and the names holding ``_SUCCESS``."""
    import pyarrow.fs as pafs

    start = len(batches_dir.key) + 1
    names, complete = set(), set()
    for info in batches_dir.listing(recursive=True):
        parts = info.path[start:].split("/")
        if len(parts) > 1 or info.type == pafs.FileType.Directory:
            names.add(parts[0])
        if parts[1:] == [SUCCESS_MARKER] and info.type == pafs.FileType.File:
            complete.add(parts[0])
    return [(n, batches_dir / n) for n in sorted(names)], complete


def _folder_id(name: str, batches_dir, stacklevel: int) -> int | None:
    """The batch id a directory's name gives; None (with a warning) otherwise."""
    if not _ID_PATTERN.fullmatch(name):
        warnings.warn(
            f"ignoring directory {name!r} in {batches_dir}: "
            "its name is not a batch id (a non-negative integer)",
            BatchStoreWarning,
            stacklevel=stacklevel,
        )
        return None
    return int(name)


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


def batch_file(info: BatchInfo, kind: str, *, required: bool):
    """The ``<kind>.<fmt>`` file or the ``<kind>/`` folder of part files of a batch: None if
    absent (an error if ``required``).

    A file that links out of the batch directory, two of one kind (``data.parquet`` and
    ``data.csv``, or a file and a folder), or a folder without a parquet part file (or with a
    file that is not one) are a :class:`BatchStoreError`.
    """
    found = [info.path / f"{kind}.{fmt}" for fmt in FORMATS]
    found = [p for p in found if p.is_file()]
    folder = info.path / kind
    if folder.is_dir():
        found.append(folder)
    for p in found:
        if not is_remote(p) and not inside(p, info.path):
            raise BatchStoreError(
                f"batch {info.id}: {p.name} is a link to {p.resolve()}, outside the batch "
                f"directory {info.path}; expected a file inside it: copy the file in"
            )
    if len(found) > 1:
        names = [p.name + ("/" if p == folder else "") for p in found]
        raise BatchStoreError(
            f"batch {info.id} has both {' and '.join(names)} in {info.path}; "
            f"keep one data {'file or folder' if folder in found else 'file'}: remove all but one"
        )
    if not found:
        if required:
            raise BatchStoreError(
                f"batch {info.id} has no data file in {info.path}: expected "
                f"{' or '.join(f'{kind}.{fmt}' for fmt in FORMATS)} (or a folder {kind}/ of parquet part files)"
            )
        return None
    if found[0] == folder:
        dataset_parts(info.id, folder)   # checked now: an empty or mixed folder is named before any read
    return found[0]


def dataset_parts(batch_id: int, folder) -> list:
    """The parquet part files of the dataset folder ``folder``, in name order (checked)."""
    parts, others = part_files(folder)
    if others and others[0].is_dir():
        raise BatchStoreError(
            f"batch {batch_id}: {folder.name}/{others[0].name}/ is a folder; a partitioned dataset is not read: "
            f"write the batch's parts directly under {folder.name}/ (one batch, one folder of parts)"
        )
    if others:
        raise BatchStoreError(
            f"batch {batch_id}: {folder.name}/{others[0].name} is not a parquet part file; a dataset folder "
            "holds *.parquet parts (files starting with _ or . are ignored): remove it or write parquet"
        )
    for part in parts:
        if not is_remote(part) and not inside(part, folder):
            raise BatchStoreError(
                f"batch {batch_id}: {folder.name}/{part.name} is a link to {part.resolve()}, outside the batch "
                f"directory; expected a file inside it: copy the file in"
            )
    if not parts:
        raise BatchStoreError(
            f"batch {batch_id}: {folder.name}/ holds no parquet part file (part-*.parquet); "
            "expected the parts a Spark, Dask or pyarrow writer leaves there"
        )
    return parts


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves (symlinks followed) to ``root`` or below it."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
