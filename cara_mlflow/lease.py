"""The store lease: one lifecycle command at a time per batch store on an object store (``s3://``).

``flock`` (:mod:`cara_mlflow.lock`) cannot reach across hosts, so on S3 the lock is an object,
``PREFIX/.cara.lease``, created only if absent (``PutObject`` with ``If-None-Match: *``). It names
its owner and an expiry; a daemon thread renews it every ``ttl/3`` seconds with ``If-Match`` on
its ETag. A holder that dies (``kill -9``, a lost host) leaves a lease that expires, and the next
run takes it over, again with ``If-Match`` so that of two waiters only one wins.

This is only safe where the store honours conditional writes, so :func:`object_lease` checks that
by behaviour (:func:`supports_conditional_writes`) each time, and refuses a store that does not
unless the user vouches for a single scheduler. Expiry compares the holder's clock with the
waiter's: hosts must agree to well within ``ttl`` (NTP does, by orders of magnitude).

Usage, against any S3-compatible endpoint (``tests/test_lease.py`` runs it on moto)::

    with object_lease("bucket", "stores/churn", timeout=60) as lease:
        ...                                   # step the store
        if lease is not None and lease.lost:  # another host took the lease over: do not commit
            ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Callable, Iterator

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectionError as BotoConnectionError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from .errors import InputError, LockBusy, StoreUnreachable
from .processes import boot_id, gone_here

__all__ = ["LEASE_KEY", "DEFAULT_TTL", "CONNECT_TIMEOUT", "READ_TIMEOUT", "MAX_ATTEMPTS", "POLL_INTERVAL",
           "LeaseInfo", "lease_key", "s3_client", "supports_conditional_writes", "object_lease"]

LEASE_KEY = ".cara.lease"
#: Seconds a lease lives without renewal: how long a killed holder blocks the store.
DEFAULT_TTL = 600.0
#: The boto3 client's patience (seconds, attempts in all): an outage is reported within about
#: MAX_ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT) seconds. Read when a client is made.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
MAX_ATTEMPTS = 2
#: Seconds between two attempts of a waiter (jittered, so that waiters do not move in step).
POLL_INTERVAL = 0.5

_log = logging.getLogger(__name__)

#: The connection never gave an answer (refused, timed out, cut, TLS).
_NETWORK = (BotoConnectionError, HTTPClientError)
_NO_CREDENTIALS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)
_REFUSED_CREDENTIALS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                        "ExpiredToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem"}
#: How stores that do not know the conditional headers reject them.
_UNSUPPORTED = {"NotImplemented", "InvalidArgument", "InvalidRequest", "HeaderNotImplemented"}
_REASONS = ((ConnectTimeoutError, "connect timed out"), (ReadTimeoutError, "no answer in time"),
            (EndpointConnectionError, "cannot connect"), (ConnectionClosedError, "connection closed"))


@dataclasses.dataclass
class LeaseInfo:
    """The lease held by this process; ``etag`` and ``expires`` move with each renewal.

    ``lost`` turns True when a renewal finds the lease replaced (taken over after it expired):
    from then on another process may be stepping the store. ``confirm()`` renews it at once or
    raises :class:`LockBusy` (lost) — the fence a command calls before its commit.
    """

    bucket: str
    key: str
    owner: str
    etag: str
    acquired: str
    expires: float
    lost: bool = False
    confirm: Callable[[], None] = dataclasses.field(default=lambda: None, repr=False, compare=False)


def lease_key(prefix: str) -> str:
    """The key of the lease object of the store under ``prefix``.

    >>> lease_key("stores/churn/"), lease_key("")
    ('stores/churn/.cara.lease', '.cara.lease')
    """
    return _under(prefix, LEASE_KEY)


def s3_client():
    """A boto3 S3 client configured from the standard environment variables only.

    ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (an S3-compatible store), the default
    credential chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles),
    ``AWS_REGION`` or ``AWS_DEFAULT_REGION``; with this module's timeouts and attempts.

    >>> s3_client().meta.service_model.service_name
    's3'
    """
    import boto3
    from botocore.config import Config

    connect, read, attempts = _timeouts()
    config = Config(connect_timeout=connect, read_timeout=read,
                    retries={"total_max_attempts": attempts, "mode": "standard"})
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    # A session of our own: boto3's default session is global state, cached across calls.
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _timeouts() -> tuple[float, float, int]:
    """This module's timeouts and attempts, unless ``CARA_OBJECT_STORE_TIMEOUT`` / ``AWS_MAX_ATTEMPTS``
    say otherwise (as for the store's reads: :func:`cara_mlflow.store.location.timeouts`)."""
    from .store.location import TIMEOUT_ENV, timeouts

    connect, read, attempts = timeouts()
    seconds_set = bool(os.environ.get(TIMEOUT_ENV))
    return (connect if seconds_set else CONNECT_TIMEOUT, read if seconds_set else READ_TIMEOUT,
            attempts if os.environ.get("AWS_MAX_ATTEMPTS") else MAX_ATTEMPTS)


def supports_conditional_writes(client, bucket: str, prefix: str) -> bool:
    """Whether the store honours ``If-None-Match: *`` on ``PutObject``, found by trying it.

    Puts a probe object under ``prefix`` twice: True iff the first put succeeds and the second
    fails its precondition (412). The probe is deleted again. Judged by behaviour, never by the
    endpoint's name: gateways in front of any store may or may not pass the header on.
    Unreachable store or refused credentials: :class:`StoreUnreachable`, :class:`InputError`.
    """
    key = _under(prefix, f".cara.probe-{uuid.uuid4().hex}")
    with _store_errors(client, bucket, prefix):
        try:
            honoured = _probe(client, bucket, key)
        except _NETWORK:
            raise  # the store is gone: a clean-up timing out as well would only delay the report
        except BaseException:
            _delete_quietly(client, bucket, key)
            raise
        _delete_quietly(client, bucket, key)
        return honoured


@contextlib.contextmanager
def object_lease(bucket: str, prefix: str, timeout: float, *, ttl: float = DEFAULT_TTL,
                 single_scheduler: bool = False, client=None) -> Iterator[LeaseInfo | None]:
    """Hold the lease of the store ``s3://BUCKET/PREFIX``, waiting up to ``timeout`` seconds, else :class:`LockBusy`.

    Yields the :class:`LeaseInfo`, renewed in the background until the block ends, then deleted
    (unless it was lost). On a store without conditional writes: :class:`InputError`, or, with
    ``single_scheduler``, no lease at all (yields None: the user vouched that one scheduler runs
    cara-mlflow on this store). ``client`` defaults to :func:`s3_client`.
    """
    if ttl <= 0:
        raise InputError(f"lease ttl: expected > 0 seconds, got {ttl:g}")
    client = s3_client() if client is None else client
    if not supports_conditional_writes(client, bucket, prefix):
        if not single_scheduler:
            raise InputError(f"store: {_store_uri(bucket, prefix)} does not honour conditional writes "
                             "(If-None-Match), so two hosts could step at once; use an object store that does "
                             "(AWS S3, GCS, MinIO, ...) or pass --single-scheduler if only one scheduler ever "
                             "runs cara-mlflow on this store")
        yield None
        return
    with _store_errors(client, bucket, prefix):
        info = _acquire(client, bucket, prefix, timeout, ttl)
    heartbeat = _Heartbeat(client, info, ttl, _store_uri(bucket, prefix))
    info.confirm = heartbeat.confirm
    heartbeat.start()
    try:
        yield info
    finally:
        heartbeat.halt()
        _release(client, info)


# -- taking, renewing, releasing -------------------------------------------------------------
def _acquire(client, bucket: str, prefix: str, timeout: float, ttl: float) -> LeaseInfo:
    """Take the lease, polling until ``timeout`` seconds have passed."""
    key = lease_key(prefix)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{boot_id()}"
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        info, holder = _try_acquire(client, bucket, key, owner, ttl)
        if info is not None:
            return info
        if time.monotonic() >= deadline:
            raise LockBusy(_busy_message(bucket, prefix, holder, timeout))
        if holder is not None:  # None: released between our put and our read, so try again at once
            time.sleep(min(POLL_INTERVAL * random.uniform(0.5, 1.5), max(deadline - time.monotonic(), 0.0)))


def _try_acquire(client, bucket: str, key: str, owner: str, ttl: float) -> tuple[LeaseInfo | None, dict | None]:
    """One attempt: (the lease, None) when taken, else (None, the holder's lease or None if gone)."""
    acquired = _utc_now()
    body, expires = _body(owner, acquired, ttl)
    etag = _put(client, bucket, key, body, IfNoneMatch="*")
    if etag is None:
        held = _read(client, bucket, key)
        if held is None:
            return None, None
        holder, held_etag = held
        if holder["owner"] == owner:   # our own put, retried after a lost answer, did land
            return LeaseInfo(bucket, key, owner, held_etag, acquired, expires), None
        if holder["expires"] >= time.time() and _alive(holder):
            return None, holder
        # Expired (its holder died): replace exactly that version, so that only one waiter wins.
        etag = _put(client, bucket, key, body, IfMatch=held_etag)
        if etag is None:
            return None, holder
    return LeaseInfo(bucket, key, owner, etag, acquired, expires), None


def _alive(holder: dict) -> bool:
    """False when the holder ran on this machine (same host name and boot) and its process is gone
    (a step killed, or one that exited during an outage and could not delete its lease): no need to
    wait for its expiry."""
    host, pid, _, boot = (str(holder.get("owner", "")).split(":") + ["", "", "", ""])[:4]
    return not gone_here(host, pid, boot)


def _release(client, info: LeaseInfo) -> None:
    """Delete our lease, if it still is ours; on failure it simply expires."""
    if info.lost:
        return
    try:
        client.delete_object(Bucket=info.bucket, Key=info.key, IfMatch=info.etag)
    except (ClientError, BotoCoreError) as exc:
        # not a warning: the command already reports its own failure in one line (an outage), and a
        # lease left behind expires, or is taken over at once on this host once its process is gone
        _log.debug("lease s3://%s/%s not released (%s); it expires by itself", info.bucket, info.key, exc)


class _Heartbeat(threading.Thread):
    """Renews the lease every ``ttl/3`` seconds until halted or the lease is found lost; and, on
    demand, at once (:meth:`confirm`, the fence before a commit)."""

    def __init__(self, client, info: LeaseInfo, ttl: float, uri: str):
        super().__init__(name="cara-lease-heartbeat", daemon=True)
        self.client, self.info, self.ttl, self.uri = client, info, ttl, uri
        self._halted = threading.Event()
        self._renewing = threading.Lock()   # a beat and a confirm never race on the ETag

    def run(self) -> None:
        while not self._halted.wait(self.ttl / 3) and self.beat():
            pass

    def beat(self) -> bool:
        """Renew once; False once the lease is lost (nothing more to renew)."""
        try:
            return self._renew()
        except (ClientError, BotoCoreError) as exc:
            # Two more beats before the lease expires: a passing outage costs nothing.
            _log.debug("lease %s not renewed (%s); retrying", self.uri, exc)
            return True

    def confirm(self) -> None:
        """Renew now, or fail: :class:`LockBusy` when the lease was taken over (this process stalled
        past its expiry and another one may be stepping the store), :class:`StoreUnreachable` when
        the store cannot say. Called before a commit, so that only the lease's holder commits."""
        with _store_errors(self.client, self.info.bucket, self.info.key.rpartition("/")[0]):
            held = not self.info.lost and self._renew()
        if not held:
            raise LockBusy(f"the lease on {self.uri} was taken over by another process while this one ran "
                           f"(it stalled past the lease's {self.ttl:g} s); nothing committed: the next step "
                           "redoes the batch")

    def _renew(self) -> bool:
        with self._renewing:
            info = self.info
            if info.lost:
                return False
            body, expires = _body(info.owner, info.acquired, self.ttl)
            etag = _put(self.client, info.bucket, info.key, body, IfMatch=info.etag)
            if etag is None:   # our own earlier put may have landed without its answer: still ours?
                held = _read(self.client, info.bucket, info.key)
                if held is not None and held[0]["owner"] == info.owner:
                    etag = _put(self.client, info.bucket, info.key, body, IfMatch=held[1])
            if etag is None:
                info.lost = True
                _log.debug("lease %s lost: another process took it over", self.uri)  # the fence reports it
                return False
            info.etag, info.expires = etag, expires
            return True

    def halt(self) -> None:
        """Stop renewing; waits for a renewal in flight, so that ``info.etag`` is the last one."""
        self._halted.set()
        self.join()


# -- S3 calls ---------------------------------------------------------------------------------
def _probe(client, bucket: str, key: str) -> bool:
    """Both conditions the lease relies on: ``If-None-Match: *`` (create only if absent) and
    ``If-Match`` (replace only that version: renewal and takeover)."""
    body = b"cara-mlflow probe"
    try:
        first = _put(client, bucket, key, body, IfNoneMatch="*")
        if first is None:
            return False  # "exists" for a key nobody wrote: not the semantics we rely on
        if _put(client, bucket, key, body, IfNoneMatch="*") is not None:
            return False
        if _put(client, bucket, key, body, IfMatch='"cara-no-such-version"') is not None:
            return False
        return _put(client, bucket, key, body, IfMatch=first) is not None
    except ClientError as exc:
        if _code(exc) in _UNSUPPORTED or _status(exc) == 501:
            return False
        raise


def _put(client, bucket: str, key: str, body: bytes, **condition) -> str | None:
    """Conditional put: the new ETag, or None when the condition failed (or ``If-Match`` found no object)."""
    try:
        return client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                                 **condition)["ETag"]
    except ClientError as exc:
        # 409 ConditionalRequestConflict: AWS's answer to a concurrent conditional write on the key.
        if _status(exc) in (409, 412) or _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
            return None
        if "IfMatch" in condition and _code(exc) == "NoSuchKey":
            return None
        raise


def _read(client, bucket: str, key: str) -> tuple[dict, str] | None:
    """The lease object (parsed) and its ETag; None when there is none."""
    try:
        got = client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _code(exc) == "NoSuchKey":
            return None
        raise
    return _parse(got["Body"].read()), got["ETag"]


def _delete_quietly(client, bucket: str, key: str) -> None:
    with contextlib.suppress(ClientError, BotoCoreError):
        client.delete_object(Bucket=bucket, Key=key)


# -- helpers ------------------------------------------------------------------------------------
def _body(owner: str, acquired: str, ttl: float) -> tuple[bytes, float]:
    expires = time.time() + ttl
    return json.dumps({"owner": owner, "acquired": acquired, "expires": expires, "ttl": ttl}).encode(), expires


def _parse(body: bytes) -> dict:
    """A lease's fields; an unreadable lease counts as expired (nobody can be vouching for it).

    >>> _parse(b'{"owner": "h:1:ab", "expires": 5}')["expires"], _parse(b"garbage")["expires"]
    (5.0, 0.0)
    """
    try:
        lease = json.loads(body)
        return {"owner": str(lease["owner"]), "expires": float(lease["expires"])}
    except (ValueError, TypeError, KeyError):
        return {"owner": "unknown (unreadable lease)", "expires": 0.0}


def _busy_message(bucket: str, prefix: str, holder: dict | None, timeout: float) -> str:
    who = "another cara-mlflow process"
    if holder is not None:
        until = datetime.fromtimestamp(holder["expires"], timezone.utc).isoformat(timespec="seconds")
        who = f"another cara-mlflow process ({holder['owner']}, lease until {until})"
    return f"{who} holds the lease on {_store_uri(bucket, prefix)} (waited {timeout:g} s); cron may retry later"


@contextlib.contextmanager
def _store_errors(client, bucket: str, prefix: str) -> Iterator[None]:
    """Turn boto errors into the one-line errors the CLI reports (exit 75 when retrying may help)."""
    uri = _store_uri(bucket, prefix)
    try:
        yield
    except _NETWORK as exc:
        raise StoreUnreachable(_unreachable(client, _reason(exc), uri)) from exc
    except _NO_CREDENTIALS as exc:
        raise InputError(f"store: no usable credentials for {uri} ({exc}); "
                         "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from exc
    except ClientError as exc:
        code = _code(exc)
        if code == "NoSuchBucket":
            raise InputError(f"store: bucket {bucket!r} of {uri} does not exist; create it or fix --store") from exc
        if code in _REFUSED_CREDENTIALS:
            raise InputError(f"store: {uri} refused the credentials ({code}); set AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY to a key allowed to put, get and delete objects there") from exc
        if _status(exc) >= 500:
            raise StoreUnreachable(_unreachable(client, f"{code}, HTTP {_status(exc)}", uri)) from exc
        raise


def _unreachable(client, reason: str, uri: str) -> str:
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None) or "s3"
    return f"object store {endpoint} unreachable ({reason}) while taking the lease on {uri}; cron may retry later"


def _reason(exc: Exception) -> str:
    return next((text for kind, text in _REASONS if isinstance(exc, kind)), type(exc).__name__)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _under(prefix: str, name: str) -> str:
    prefix = prefix.rstrip("/")
    return f"{prefix}/{name}" if prefix else name


def _store_uri(bucket: str, prefix: str) -> str:
    """The store as the user names it.

    >>> _store_uri("bucket", "stores/churn/"), _store_uri("bucket", "")
    ('s3://bucket/stores/churn', 's3://bucket')
    """
    prefix = prefix.rstrip("/")
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
