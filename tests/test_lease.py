"""The store lease on an object store (``cara_mlflow/lease.py``), against a real S3 server (moto).

One ``moto_server`` per module (``tests/s3_server.py``); each test has its own prefix in one
bucket, so leases never meet across tests. Only the refusal path of the conditional-write probe
uses a fake client: no real server ignores the header on demand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from cara_mlflow import lease as lease_module
from cara_mlflow.errors import InputError, LockBusy, StoreUnreachable
from cara_mlflow.lease import DEFAULT_TTL, LEASE_KEY, lease_key, object_lease, supports_conditional_writes

from .pgserver import free_port
from .s3_server import S3Server

BUCKET = "cara-lease"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3():
    """The server, with the standard AWS variables pointing at it for the module (restored after)."""
    with S3Server() as server, pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
            mp.delenv(name, raising=False)
        for name, value in server.env.items():
            mp.setenv(name, value)
        server.make_bucket(BUCKET)
        yield server


@pytest.fixture
def prefix(s3) -> str:
    return f"stores/{uuid.uuid4().hex[:12]}"


def keys_under(s3, prefix: str) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")
    return [item["Key"] for item in listing.get("Contents", [])]


def read_lease(s3, prefix: str) -> tuple[dict, str]:
    got = s3.client().get_object(Bucket=BUCKET, Key=lease_key(prefix))
    return json.loads(got["Body"].read()), got["ETag"]


def write_lease(s3, prefix: str, body: bytes) -> None:
    s3.client().put_object(Bucket=BUCKET, Key=lease_key(prefix), Body=body)


def assert_one_line(exc: Exception) -> str:
    text = str(exc)
    assert text and "\n" not in text
    return text


def test_lease_object_exists_while_held_and_is_gone_after(s3, prefix):
    with object_lease(BUCKET, f"{prefix}/", timeout=1) as lease:
        body, etag = read_lease(s3, prefix)
        assert lease.key == f"{prefix}/{LEASE_KEY}" and lease.bucket == BUCKET and not lease.lost
        assert body["owner"] == lease.owner and lease.owner.split(":")[1] == str(os.getpid())
        assert body["ttl"] == DEFAULT_TTL and time.time() + DEFAULT_TTL - 60 < body["expires"] == lease.expires
        assert etag == lease.etag
        assert keys_under(s3, prefix) == [lease.key]  # the probe object is gone
    assert keys_under(s3, prefix) == []


def test_second_taker_waits_its_timeout_then_lock_busy(s3, prefix):
    with object_lease(BUCKET, prefix, timeout=1) as held:
        start = time.monotonic()
        with pytest.raises(LockBusy) as caught:
            with object_lease(BUCKET, prefix, timeout=1):
                pytest.fail("two holders of one lease")
        waited = time.monotonic() - start
    assert 1.0 <= waited < 3.0
    text = assert_one_line(caught.value)
    assert caught.value.exit_code == 75
    assert held.owner in text and f"s3://{BUCKET}/{prefix}" in text and "cron may retry later" in text
    assert keys_under(s3, prefix) == []


@pytest.mark.parametrize("body", [
    json.dumps({"owner": "gone-host:4242:deadbeef", "acquired": "2020-01-01T00:00:00+00:00",
                "expires": time.time() - 5, "ttl": 600.0}).encode(),
    b"{not json",
], ids=["expired", "unreadable"])
def test_an_expired_or_unreadable_lease_is_taken_over(s3, prefix, body):
    write_lease(s3, prefix, body)
    with object_lease(BUCKET, prefix, timeout=0) as lease:
        now, _ = read_lease(s3, prefix)
        assert now["owner"] == lease.owner != "gone-host:4242:deadbeef"
    assert keys_under(s3, prefix) == []


def test_a_live_lease_written_by_another_host_is_respected(s3, prefix):
    write_lease(s3, prefix, json.dumps({"owner": "other-host:7:cafe", "expires": time.time() + 60}).encode())
    with pytest.raises(LockBusy, match="other-host:7:cafe"):
        with object_lease(BUCKET, prefix, timeout=0):
            pytest.fail("took a live lease")
    assert read_lease(s3, prefix)[0]["owner"] == "other-host:7:cafe"


def test_heartbeat_keeps_a_short_lease_alive(s3, prefix):
    with object_lease(BUCKET, prefix, timeout=1, ttl=1.5) as lease:
        first, first_etag = read_lease(s3, prefix)
        time.sleep(4.0)  # without renewals the lease would have expired 2.5 s ago
        with pytest.raises(LockBusy):
            with object_lease(BUCKET, prefix, timeout=0):
                pytest.fail("took a renewed lease")
        now, etag = read_lease(s3, prefix)
        assert now["owner"] == first["owner"] == lease.owner and not lease.lost
        assert now["expires"] > first["expires"] + 2.0 and now["expires"] > time.time()
        assert etag != first_etag
    assert keys_under(s3, prefix) == []


def test_a_lease_taken_over_is_reported_lost_and_not_deleted(s3, prefix):
    with object_lease(BUCKET, prefix, timeout=1, ttl=0.6) as lease:
        write_lease(s3, prefix, json.dumps({"owner": "thief:1:f00d", "expires": time.time() + 60}).encode())
        deadline = time.monotonic() + 3
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lease.lost
    assert read_lease(s3, prefix)[0]["owner"] == "thief:1:f00d"  # the release left the new lease alone


def test_confirm_renews_now_and_refuses_once_taken_over(s3, prefix):
    with object_lease(BUCKET, prefix, timeout=1) as lease:
        before = lease.etag
        lease.confirm()                                     # held: renewed at once, a new version
        assert lease.etag != before and read_lease(s3, prefix)[1] == lease.etag
        write_lease(s3, prefix, json.dumps({"owner": "thief:1:f00d", "expires": time.time() + 60}).encode())
        with pytest.raises(LockBusy) as caught:
            lease.confirm()
        assert lease.lost and "taken over" in assert_one_line(caught.value) and caught.value.exit_code == 75
    assert read_lease(s3, prefix)[0]["owner"] == "thief:1:f00d"


CONTENDER = """
import os, sys, time
from cara_mlflow.lease import object_lease
bucket, prefix, marker = sys.argv[1:4]
taken = 0
for _ in range(5):
    with object_lease(bucket, prefix, timeout=30):
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # FileExistsError: two holders at once
        time.sleep(0.05)
        os.remove(marker)
    taken += 1
print(taken)
"""


def test_concurrent_processes_never_overlap(s3, prefix, tmp_path):
    marker = tmp_path / "held"
    contenders = [subprocess.Popen([sys.executable, "-c", CONTENDER, BUCKET, prefix, str(marker)], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [proc.communicate(timeout=120) for proc in contenders]
    for proc, (out, err) in zip(contenders, results):
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "5"
    assert not marker.exists() and keys_under(s3, prefix) == []


class IgnoringS3:
    """A fake of S3 semantics for the refusal path only: a store whose puts ignore ``If-None-Match``
    (as some gateways and older S3-compatible stores do), or reject the header (``reject=True``)."""

    def __init__(self, reject: bool = False):
        self.objects: dict[str, bytes] = {}
        self.reject = reject

    def put_object(self, Bucket, Key, Body, **kwargs):
        if self.reject and "IfNoneMatch" in kwargs:
            raise ClientError({"Error": {"Code": "NotImplemented", "Message": "header not implemented"},
                               "ResponseMetadata": {"HTTPStatusCode": 501}}, "PutObject")
        self.objects[Key] = Body
        return {"ETag": f'"{uuid.uuid4().hex}"'}

    def delete_object(self, Bucket, Key, **kwargs):
        self.objects.pop(Key, None)
        return {}


def test_probe_is_true_on_a_store_honouring_conditional_writes(s3, prefix):
    assert supports_conditional_writes(s3.client(), BUCKET, prefix) is True
    assert keys_under(s3, prefix) == []


@pytest.mark.parametrize("reject", [False, True], ids=["ignores-header", "rejects-header"])
def test_a_store_without_conditional_writes_is_refused_unless_single_scheduler(reject):
    store = IgnoringS3(reject=reject)
    assert supports_conditional_writes(store, "bkt", "p") is False
    assert store.objects == {}  # the probe cleaned up
    with pytest.raises(InputError) as caught:
        with object_lease("bkt", "p", timeout=1, client=store):
            pytest.fail("leased on a store without conditional writes")
    text = assert_one_line(caught.value)
    assert "s3://bkt/p" in text and "--single-scheduler" in text and "If-None-Match" in text
    with object_lease("bkt", "p", timeout=1, single_scheduler=True, client=store) as lease:
        assert lease is None
        assert store.objects == {}


@pytest.fixture
def impatient(monkeypatch):
    """Clients that give up after one attempt of about a second."""
    monkeypatch.setattr(lease_module, "CONNECT_TIMEOUT", 1.0)
    monkeypatch.setattr(lease_module, "READ_TIMEOUT", 1.0)
    monkeypatch.setattr(lease_module, "MAX_ATTEMPTS", 1)


def test_an_outage_is_store_unreachable_then_the_lease_works_again(s3, prefix, impatient):
    s3.pause()
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnreachable) as caught:
            with object_lease(BUCKET, prefix, timeout=10):
                pytest.fail("leased on a stopped server")
        assert time.monotonic() - start < 6.0  # not the 10 s timeout: an outage is not a busy lease
    finally:
        s3.resume()
    text = assert_one_line(caught.value)
    assert caught.value.exit_code == 75
    assert s3.endpoint in text and f"s3://{BUCKET}/{prefix}" in text and "cron may retry later" in text
    with object_lease(BUCKET, prefix, timeout=5) as lease:
        assert read_lease(s3, prefix)[0]["owner"] == lease.owner


def test_nothing_listening_is_store_unreachable(s3, prefix, impatient, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreUnreachable, match="cannot connect") as caught:
        with object_lease(BUCKET, prefix, timeout=10):
            pytest.fail("leased on no server")
    assert_one_line(caught.value)


@pytest.mark.parametrize("who", ["unknown-key", "no-permission"])
def test_refused_credentials_are_input_errors(s3, prefix, monkeypatch, who):
    if who == "unknown-key":
        key, secret = "AKIAUNKNOWNKEY000000", "wrong"
    else:  # an IAM user of the server without any policy
        iam = boto3.session.Session().client("iam", endpoint_url=s3.endpoint, region_name="us-east-1",
                                             aws_access_key_id="testing", aws_secret_access_key="testing")
        user = f"nobody-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        created = iam.create_access_key(UserName=user)["AccessKey"]
        key, secret = created["AccessKeyId"], created["SecretAccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    s3.require_auth(True)
    try:
        with pytest.raises(InputError) as caught:
            with object_lease(BUCKET, prefix, timeout=1):
                pytest.fail("leased with refused credentials")
    finally:
        s3.require_auth(False)
    text = assert_one_line(caught.value)
    assert "AWS_ACCESS_KEY_ID" in text and f"s3://{BUCKET}/{prefix}" in text
    assert ("InvalidAccessKeyId" if who == "unknown-key" else "AccessDenied") in text


def test_a_missing_bucket_is_an_input_error(s3, prefix):
    with pytest.raises(InputError) as caught:
        with object_lease("no-such-bucket", prefix, timeout=1):
            pytest.fail("leased in a missing bucket")
    text = assert_one_line(caught.value)
    assert "no-such-bucket" in text and "create it" in text


def test_object_store_failures_are_one_line_errors_of_the_right_kind():
    """pyarrow's S3 messages: the network or a 5xx is exit 75, refused credentials exit 1, else not ours."""
    from cara_mlflow.store.location import unreachable

    where = "s3://bkt/store/batches"
    refused = OSError("When getting information for key 'store/batches' in bucket 'bkt': AWS Error ACCESS_DENIED "
                      "during HeadObject operation: No response body.")
    slow = OSError("AWS Error SLOW_DOWN during GetObject operation: Please reduce your request rate.")
    down = OSError("AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Couldn't connect to server")
    denied = unreachable(refused, where)
    assert isinstance(denied, InputError) and "AWS_ACCESS_KEY_ID" in str(denied) and "\n" not in str(denied)
    assert isinstance(unreachable(slow, where), StoreUnreachable)
    assert isinstance(unreachable(down, where), StoreUnreachable)
    assert unreachable(OSError("Parquet magic bytes not found"), where) is None
    assert unreachable(ValueError("AWS Error ACCESS_DENIED"), where) is None


def test_without_a_lease_one_host_still_never_overlaps(tmp_path):
    """gs:// and abfs:// (no conditional writes driven): refused unless --single-scheduler, then a host flock."""
    from cara_mlflow.lock import store_guard
    from cara_mlflow.store.location import store_root

    root = store_root(f"abfs://lake@acct{uuid.uuid4().hex[:6]}.dfs.core.windows.net/churn")   # nothing contacted
    with pytest.raises(InputError, match="--single-scheduler"):
        with store_guard(root, 0):
            pytest.fail("a remote store without a lease, unvouched")
    with store_guard(root, 0, single_scheduler=True) as fence:
        fence()                                                     # nothing to confirm without a lease
        with pytest.raises(LockBusy):
            with store_guard(root, 0, single_scheduler=True):
                pytest.fail("two runs of the one scheduler at once")
