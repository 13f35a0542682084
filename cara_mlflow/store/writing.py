"""Writing a batch atomically: temporary files synced and renamed into place, ``_SUCCESS`` last.

Each file of a batch is written under a temporary name in the batch directory, synced to disk
and renamed into place (``os.replace``), ``_SUCCESS`` last, then the directory is synced: a
reader sees either no file or a whole one, and never a complete batch without its data. A new
file gets the mode any new file would (``0666 & ~umask``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .errors import BatchStoreError
from .layout import FORMATS, QUERIES_MARKER, SUCCESS_MARKER, BatchInfo

__all__ = ["check_arguments", "check_writable", "write_files", "write_queries_first"]

_WRITERS: dict[str, Callable[[pd.DataFrame, str], Any]] = {
    "parquet": lambda frame, path: frame.to_parquet(path, index=False),
    "csv": lambda frame, path: frame.to_csv(path, index=False),
}
"""How a frame is written in each of :data:`~cara_mlflow.store.layout.FORMATS`."""


def check_arguments(batch_id: int, data: Any, queries: Any, fmt: str) -> None:
    """Fail on an unknown format, or data or queries that are not DataFrames."""
    if fmt not in _WRITERS:
        raise BatchStoreError(
            f"batch {batch_id}: unknown file format {fmt!r}; expected one of "
            f"{', '.join(FORMATS)}"
        )
    for name, frame in (("data", data), ("queries", queries)):
        if frame is not None and not isinstance(frame, pd.DataFrame):
            raise TypeError(
                f"batch {batch_id}: {name} must be a pandas DataFrame, "
                f"got {type(frame).__name__}"
            )


def check_writable(batch_id: int, existing: BatchInfo | None) -> None:
    """Fail when batch ``batch_id`` exists and is complete: a batch is written once."""
    if existing is not None and existing.complete:
        raise BatchStoreError(
            f"batch {batch_id} already exists and is complete; a batch is written once: "
            f"write a new id, or remove {existing.path} first"
        )


def write_files(path: Path, data: pd.DataFrame, queries: pd.DataFrame | None, fmt: str, *,
                keep_queries: bool = False) -> None:
    """Write the batch directory ``path``: ``data.<fmt>``, ``queries.<fmt>`` if given, ``_SUCCESS``.

    The directory is created as needed; data/queries files it holds that this call does not
    write (another format, or queries not given) are removed first — except, with
    ``keep_queries``, the queries a ``_QUERIES`` batch already holds (its labels now land).
    """
    path.mkdir(parents=True, exist_ok=True)
    written = {f"data.{fmt}"} | ({f"queries.{fmt}"} if queries is not None else set())
    for stale in (f"{kind}.{other}" for kind in ("data", "queries") for other in FORMATS):
        if stale not in written and not (keep_queries and stale.startswith("queries.")):
            (path / stale).unlink(missing_ok=True)
    for stale in ("data",) + (() if keep_queries else ("queries",)):   # a dataset folder a producer left
        shutil.rmtree(path / stale, ignore_errors=True)
    _write_atomically(path / f"data.{fmt}", lambda tmp: _WRITERS[fmt](data, tmp))
    if queries is not None:
        _write_atomically(path / f"queries.{fmt}", lambda tmp: _WRITERS[fmt](queries, tmp))
    _write_atomically(path / SUCCESS_MARKER, lambda tmp: None)
    _sync_directory(path)


def write_queries_first(path: Path, queries: pd.DataFrame, fmt: str) -> None:
    """Write ``queries.<fmt>`` into the batch directory ``path``, then ``_QUERIES``: the batch's
    queries are complete, its labels (``data.<fmt>``, ``_SUCCESS``) follow later."""
    path.mkdir(parents=True, exist_ok=True)
    for other in FORMATS:
        if other != fmt:
            (path / f"queries.{other}").unlink(missing_ok=True)
    _write_atomically(path / f"queries.{fmt}", lambda tmp: _WRITERS[fmt](queries, tmp))
    _write_atomically(path / QUERIES_MARKER, lambda tmp: None)
    _sync_directory(path)


def _write_atomically(path: Path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, sync it, rename it to ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes 0600; a batch file gets the mode any new file would (0666 & ~umask),
        # so readers such as an MLflow server's user see it and it is never world-writable
        # unless the umask says so.
        os.chmod(tmp, 0o666 & ~_current_umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    """The process umask (read by setting and restoring it; POSIX has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_directory(path: Path) -> None:
    """Make the renames into ``path`` durable (POSIX; a no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
