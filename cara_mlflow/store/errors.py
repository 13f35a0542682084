"""The batch store's error and warning.

Both are part of :mod:`cara_mlflow.store`'s public API and carry its name (``__module__``), so a
traceback, a doctest and a pickle say ``cara_mlflow.store.BatchStoreError`` wherever they are
raised from.
"""

from __future__ import annotations

from ..errors import InputError

__all__ = ["BatchStoreError", "BatchStoreWarning"]


class BatchStoreError(InputError):
    """A batch store or one of its batches is missing, incomplete or malformed.

    The message is one line naming the batch, the file or column, and the fix.
    """


class BatchStoreWarning(UserWarning):
    """Something in a batch store was ignored (a directory that is not a batch id)."""


for _public in (BatchStoreError, BatchStoreWarning):
    _public.__module__ = "cara_mlflow.store"
del _public
