"""The store lock: one lifecycle command at a time per batch store: POSIX ``flock`` on a local
store, a lease object created only if absent on an object store (:mod:`cara_mlflow.lease`).

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> with store_lock(root, timeout=1):
...     try:
...         with store_lock(root, timeout=0):
...             pass
...     except LockBusy as exc:
...         print(exc.exit_code)
75
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from .errors import InputError, LockBusy

__all__ = ["LOCK_FILE", "store_lock", "store_guard"]

LOCK_FILE = ".cara.lock"


@contextlib.contextmanager
def store_lock(root: str | os.PathLike, timeout: float) -> Iterator[None]:
    """Exclusive lock on ``ROOT/.cara.lock``, waiting up to ``timeout`` seconds, else :class:`LockBusy`.

    The lock belongs to the open file, so it is released when the block ends or the process
    dies (``kill -9`` included). It also covers MLflow's first initialisation of an empty sqlite
    file in the store, which is not safe to run twice at once.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LockBusy(f"another cara-mlflow process holds the lock on {root} "
                                   f"(waited {timeout:g} s); cron may retry later") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _nothing_to_confirm() -> None:
    """A flock is held until the process ends: nothing can take it over."""


@contextlib.contextmanager
def store_guard(root, timeout: float, *, single_scheduler: bool = False) -> Iterator[Callable[[], None]]:
    """The lock of the store at ``root``: :func:`store_lock` on a local directory; on ``s3://`` the
    lease of :func:`cara_mlflow.lease.object_lease` (conditional writes, probed); on ``gs://`` and
    ``abfs://``, whose conditional writes we do not drive, only with ``single_scheduler``.

    Without a lease (``single_scheduler``), a flock on this host still keeps that scheduler's own
    runs from overlapping. Yields the fence to call before each registry write that counts: it
    raises :class:`LockBusy` when a lease was taken over while the command ran (a no-op otherwise).
    """
    from .store.location import is_remote

    if not is_remote(root):
        with store_lock(root, timeout):
            yield _nothing_to_confirm
        return
    if root.scheme == "s3":
        from .lease import object_lease

        with object_lease(root.bucket, root.prefix, timeout, single_scheduler=single_scheduler) as lease:
            if lease is not None:
                yield lease.confirm
                return
            with _host_lock(root, timeout):   # the one scheduler's own runs must not overlap either
                yield _nothing_to_confirm
        return
    if not single_scheduler:
        raise InputError(f"store: {root} has no cross-host lock in cara-mlflow ({root.scheme}:// conditional writes "
                         "are not driven yet), so two hosts could step at once; use the bucket's S3-compatible "
                         "endpoint (s3://, AWS_ENDPOINT_URL) or pass --single-scheduler if only one scheduler "
                         "ever runs cara-mlflow on this store")
    with _host_lock(root, timeout):
        yield _nothing_to_confirm


def _host_lock(root, timeout: float):
    """A flock on this host for a remote store used without a lease (one scheduler): two cron runs
    of that scheduler still never overlap. Named by a hash of the store's URI, in the temp dir."""
    import hashlib
    import tempfile

    name = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return store_lock(Path(tempfile.gettempdir()) / "cara-mlflow-locks" / name, timeout)
