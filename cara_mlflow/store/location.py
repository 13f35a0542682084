"""Where a store lives: a local directory (:class:`pathlib.Path`) or a folder on an object store
(:class:`ObjectPath`, through pyarrow's filesystems).

``--store`` takes a path, a ``file://`` URI (both local), or ``s3://``, ``gs://``, ``abfs://``
URIs. An object store is configured only by its cloud's standard variables: for S3
``AWS_ENDPOINT_URL`` (any S3-compatible server), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``; for GCS ``GOOGLE_APPLICATION_CREDENTIALS``; for Azure the account in the URI
(``abfs://container@ACCOUNT.dfs.core.windows.net/prefix``) and Azure's default credential chain
(``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``, ``AZURE_CLIENT_SECRET``, or a managed identity).

An :class:`ObjectPath` answers the part of :class:`pathlib.Path` the store uses (``/``, ``name``,
``suffix``, ``parent``, ``is_file``, ``is_dir``, ``iterdir``), so the layout code is one code path;
object stores have no links, so ``resolve`` is the path itself. A network failure of the object
store is a :class:`~cara_mlflow.errors.StoreUnreachable` (exit 75: cron retries later).

>>> root = store_root("/tmp/some-store")
>>> type(root).__name__, is_remote(root)
('PosixPath', False)
>>> store_root("file:///tmp/some-store") == root
True
>>> store_root("ftp://host/x")
Traceback (most recent call last):
...
cara_mlflow.errors.InputError: store: unknown scheme 'ftp' in 'ftp://host/x'; expected a path or an s3://, gs://, ...
>>> azure = store_root("abfs://lake@acct.dfs.core.windows.net/churn")   # nothing is contacted yet
>>> azure.key, str(azure / "batches")
('lake/churn', 'abfs://lake@acct.dfs.core.windows.net/churn/batches')
>>> store_root("gs://bkt/churn").key
'bkt/churn'
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ..errors import CaraError, InputError, StoreUnreachable

__all__ = ["ObjectPath", "store_root", "is_remote", "SCHEMES", "CONNECT_TIMEOUT", "REQUEST_TIMEOUT",
           "MAX_ATTEMPTS", "TIMEOUT_ENV", "timeouts", "unreachable", "remote_errors", "part_files"]

SCHEMES = ("s3", "gs", "abfs", "abfss")
"""The object stores ``--store`` accepts by URI scheme (``gs``/``abfs`` through pyarrow's own
GCS and Azure filesystems)."""

#: Seconds to connect to, and to wait for an answer from, the object store; attempts per request.
#: An outage then costs a step about MAX_ATTEMPTS × (CONNECT + REQUEST) seconds before exit 75.
#: ``CARA_OBJECT_STORE_TIMEOUT`` (seconds, both) and AWS's own ``AWS_MAX_ATTEMPTS`` override them.
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 20.0
MAX_ATTEMPTS = 2
TIMEOUT_ENV = "CARA_OBJECT_STORE_TIMEOUT"


def timeouts() -> tuple[float, float, int]:
    """(connect timeout, request timeout, attempts) for the object store, the environment's first.

    >>> import os
    >>> os.environ[TIMEOUT_ENV] = "2"; os.environ["AWS_MAX_ATTEMPTS"] = "1"
    >>> timeouts()
    (2.0, 2.0, 1)
    >>> del os.environ[TIMEOUT_ENV], os.environ["AWS_MAX_ATTEMPTS"]
    """
    try:
        seconds = float(os.environ[TIMEOUT_ENV]) if os.environ.get(TIMEOUT_ENV) else None
        attempts = int(os.environ["AWS_MAX_ATTEMPTS"]) if os.environ.get("AWS_MAX_ATTEMPTS") else MAX_ATTEMPTS
    except ValueError as exc:
        raise InputError(f"{TIMEOUT_ENV} / AWS_MAX_ATTEMPTS: expected a number of seconds / of attempts ({exc})") \
            from None
    if seconds is not None and seconds <= 0 or attempts < 1:
        raise InputError(f"{TIMEOUT_ENV} / AWS_MAX_ATTEMPTS: expected seconds > 0 and at least 1 attempt")
    return (seconds or CONNECT_TIMEOUT, seconds or REQUEST_TIMEOUT, attempts)

# pyarrow reports an S3/GCS/Azure failure as an OSError; these words mark the network's ones, the
# server's own (5xx: try again later) and refusals (fix the credentials or the URI)
_NETWORK_MARKS = ("NETWORK_CONNECTION", "curlCode", "Timeout was reached", "Couldn't connect", "Connection refused",
                  "timed out", "Connection reset", "Failed to connect", "Could not resolve")
_SERVER_MARKS = ("SLOW_DOWN", "SlowDown", "INTERNAL_FAILURE", "InternalError", "SERVICE_UNAVAILABLE",
                 "ServiceUnavailable", "HTTP status 50")
_REFUSED_MARKS = ("ACCESS_DENIED", "AccessDenied", "INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId",
                  "SIGNATURE_DOES_NOT_MATCH", "SignatureDoesNotMatch", "NO_SUCH_BUCKET", "NoSuchBucket",
                  "PermissionDenied", "AuthorizationFailure")


class ObjectPath:
    """A file or folder ``key`` (``bucket/prefix/...``) on the pyarrow filesystem ``fs``.

    ``str()`` is its URI. Only what the store needs is here; every call asks the object store.
    """

    __slots__ = ("fs", "key", "scheme", "account")

    def __init__(self, fs, key: str, scheme: str, account: str = "") -> None:
        # account: Azure's host (ACCOUNT.dfs.core.windows.net); the key starts with the container
        self.fs, self.key, self.scheme, self.account = fs, key.strip("/"), scheme, account

    def _at(self, key: str) -> ObjectPath:
        return ObjectPath(self.fs, key, self.scheme, self.account)

    def __truediv__(self, name: str) -> ObjectPath:
        return self._at(f"{self.key}/{name}")

    def __str__(self) -> str:
        if self.account:
            container, _, rest = self.key.partition("/")
            return f"{self.scheme}://{container}@{self.account}/{rest}"
        return f"{self.scheme}://{self.key}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectPath) and (other.scheme, other.key) == (self.scheme, self.key)

    def __hash__(self) -> int:
        return hash((self.scheme, self.key))

    @property
    def name(self) -> str:
        """The last part of the key."""
        return self.key.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        """The name's suffix (``.parquet``; '' for a folder)."""
        return Path(self.name).suffix

    @property
    def parent(self) -> ObjectPath:
        """The folder holding it."""
        return self._at(self.key.rsplit("/", 1)[0])

    @property
    def bucket(self) -> str:
        """The bucket (Azure: the container)."""
        return self.key.split("/", 1)[0]

    @property
    def prefix(self) -> str:
        """The key below the bucket ('' at the bucket's root)."""
        return self.key.split("/", 1)[1] if "/" in self.key else ""

    def resolve(self) -> ObjectPath:
        """Itself: an object store has no links."""
        return self

    def _type(self):
        with remote_errors(self):
            return self.fs.get_file_info(self.key).type

    def is_file(self) -> bool:
        """Whether an object of this key exists."""
        import pyarrow.fs as pafs

        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        """Whether keys exist under it (or a folder marker does)."""
        import pyarrow.fs as pafs

        return self._type() == pafs.FileType.Directory

    def exists(self) -> bool:
        """Whether it is a file or a folder."""
        import pyarrow.fs as pafs

        return self._type() != pafs.FileType.NotFound

    def iterdir(self) -> Iterator[ObjectPath]:
        """Its direct children (files and folders), in name order."""
        for info in self.listing(recursive=False):
            yield self._at(info.path)

    def listing(self, *, recursive: bool) -> list:
        """pyarrow ``FileInfo`` of everything under it (one listing request per 1000 keys on S3)."""
        import pyarrow.fs as pafs

        with remote_errors(self):
            infos = self.fs.get_file_info(pafs.FileSelector(self.key, allow_not_found=True, recursive=recursive))
        return sorted(infos, key=lambda info: info.path)

    def open_input(self):
        """A random-access binary file (pyarrow ``NativeFile``); the caller closes it."""
        with remote_errors(self):
            return self.fs.open_input_file(self.key)

    def write_bytes(self, data: bytes) -> None:
        """One PUT: the object appears whole or not at all."""
        with remote_errors(self), self.fs.open_output_stream(self.key) as out:
            out.write(data)

    def remove_tree(self) -> None:
        """Delete everything under it (nothing if absent)."""
        with remote_errors(self), contextlib.suppress(FileNotFoundError):
            self.fs.delete_dir_contents(self.key, missing_dir_ok=True)


def is_remote(path) -> bool:
    """Whether ``path`` is on an object store."""
    return isinstance(path, ObjectPath)


def store_root(location: str | os.PathLike) -> Path | ObjectPath:
    """The store's root for ``--store``: a resolved local path, or an :class:`ObjectPath`."""
    text = os.fspath(location)
    if "://" not in text:
        return Path(text).resolve()
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme == "file":
        return Path(rest or "/").resolve()
    if scheme not in SCHEMES:
        raise InputError(f"store: unknown scheme {scheme!r} in {text!r}; expected a path or an "
                         f"{', '.join(s + '://' for s in SCHEMES)} or file:// URI")
    if not rest.strip("/"):
        raise InputError(f"store: {text!r} names no bucket; expected {scheme}://BUCKET/PREFIX")
    fs, key = _filesystem(scheme, text)
    authority = rest.split("/", 1)[0]
    account = authority.rpartition("@")[2] if scheme.startswith("abfs") else ""
    return ObjectPath(fs, key, scheme, account)


def _filesystem(scheme: str, uri: str):
    """(the pyarrow filesystem of ``scheme``, the path in it), from the cloud's standard variables."""
    import pyarrow.fs as pafs

    if scheme == "s3":
        # built here rather than by from_uri so that an outage costs bounded time (timeouts, attempts)
        connect, request, attempts = timeouts()
        return pafs.S3FileSystem(
            endpoint_override=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
            connect_timeout=connect, request_timeout=request,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
        ), uri.split("://", 1)[1]
    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError, ImportError) as exc:   # pyarrow built without GCS/Azure, or no credentials
        detail = " ".join(str(exc).split())[:200]
        raise InputError(f"store: cannot open {uri} ({detail}); check the {scheme} credentials in the environment "
                         "(README, 'At scale')") from exc


def unreachable(error: BaseException, where) -> CaraError | None:
    """The one-line error an object store's failure ``error`` means, else None (a file's own fault):
    :class:`StoreUnreachable` (exit 75) for the network or the server's 5xx, :class:`InputError`
    for refused credentials or a missing bucket."""
    if not isinstance(error, OSError):
        return None
    text = " ".join(str(error).split())
    detail = text[text.find("AWS Error"):] if "AWS Error" in text else text
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    if any(mark in text for mark in _NETWORK_MARKS + _SERVER_MARKS):
        return StoreUnreachable(f"object store unreachable at {where} ({detail}); cron may retry later")
    if any(mark in text for mark in _REFUSED_MARKS):
        return InputError(f"store: {where} refused the request ({detail}); check the credentials in the environment "
                          "(for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the bucket in --store")
    return None


@contextlib.contextmanager
def remote_errors(where) -> Iterator[None]:
    """Turn an object store's failure in the block into its one-line error (:func:`unreachable`)."""
    try:
        yield
    except OSError as error:
        mapped = unreachable(error, where)
        if mapped is None:
            raise
        raise mapped from error


def part_files(folder) -> tuple[list, list]:
    """(parquet part files, other visible entries) of a dataset folder, in name order.

    Entries whose name starts with ``_`` or ``.`` (``_SUCCESS``, ``_committed_…``, ``.crc``) are a
    writer's bookkeeping and ignored, as Spark and pyarrow ignore them; sub-folders (a partitioned
    dataset) are among the others.
    """
    if is_remote(folder):
        import pyarrow.fs as pafs

        entries = [(folder._at(i.path), i.type == pafs.FileType.File) for i in folder.listing(recursive=False)]
    else:
        entries = sorted(((p, p.is_file()) for p in folder.iterdir()), key=lambda entry: entry[0].name)
    visible = [(p, is_file) for p, is_file in entries if not p.name.startswith(("_", "."))]
    parts = [p for p, is_file in visible if is_file and p.name.endswith(".parquet")]
    return parts, [p for p, is_file in visible if not (is_file and p.name.endswith(".parquet"))]
