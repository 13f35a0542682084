"""A batch store on S3: tune → init → step against a real S3-compatible server on loopback (moto's
server mode), its batches written as a Spark job writes them (a folder of part files, ``_SUCCESS``
last), the tracking store a local sqlite file named by MLFLOW_TRACKING_URI.

Covered: part-file batches read as one table, a batch without ``_SUCCESS`` waiting, the retrain's
``data`` a URI under the store (nothing in the working directory), concurrent steps (each batch
once, the lease), an outage mid-step (the server stopped with SIGSTOP: one line, exit 75, nothing
committed; the next step completes), and the one-line refusals.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cara_mlflow.store import BatchStore

from . import crash_harness
from .helpers import NAME, client, ok, one_line_error
from .s3_server import S3Server

N_BATCHES, BATCH_SIZE, OFFLINE, INIT = 10, 200, (0, 4), 4
TIMEOUT = 300


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module")
def local_stream(tmp_path_factory) -> Path:
    """The batches as a producer has them before uploading: a CovCon-D stream in a local store."""
    from cara_mlflow.cli import cli

    root = tmp_path_factory.mktemp("stream") / "store"
    made = CliRunner().invoke(cli, ["make-stream", "covcon-d", "--out", str(root), "--n-batches", str(N_BATCHES),
                                    "--batch-size", str(BATCH_SIZE)])
    assert made.exit_code == 0, made.output
    return root


class Remote:
    """One test's store on the server: ``s3://BUCKET/lake/cara`` and the env a cron step gets."""

    def __init__(self, s3: S3Server, local: Path, tmp_path: Path):
        self.s3, self.local = s3, local
        self.bucket = f"cara-{uuid.uuid4().hex[:10]}"
        s3.make_bucket(self.bucket)
        self.uri = f"s3://{self.bucket}/lake/cara"
        self.fs = pafs.S3FileSystem(endpoint_override=s3.endpoint, access_key="testing", secret_key="testing",
                                    region="us-east-1")
        self.db = tmp_path / "tracking" / "mlflow.db"
        self.db.parent.mkdir()
        self.cwd = tmp_path / "cron-home"
        self.cwd.mkdir()

    def env(self, **extra: str) -> dict:
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "CARA_"))}
        env.update(self.s3.env, CARA_NAME=NAME, CARA_STORE=self.uri, MLFLOW_TRACKING_URI=f"sqlite:///{self.db}",
                   MLFLOW_DISABLE_TELEMETRY="true", CARA_OBJECT_STORE_TIMEOUT="2", AWS_MAX_ATTEMPTS="1")
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def command(self, env: dict) -> list[str]:
        if any(key in env for key in crash_harness.FAULT_VARIABLES):
            return [sys.executable, crash_harness.__file__]
        return [sys.executable, "-m", "cara_mlflow.cli"]

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess:
        env = self.env(**extra)
        return subprocess.run([*self.command(env), *args], env=env, cwd=self.cwd, capture_output=True, text=True,
                              timeout=TIMEOUT)

    def popen(self, *args: str, **extra: str) -> subprocess.Popen:
        env = self.env(**extra)
        return subprocess.Popen([*self.command(env), *args], env=env, cwd=self.cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def upload(self, batch_id: int, *, n_parts: int = 3, success: bool = True) -> None:
        """Batch ``batch_id`` as Spark writes it: ``data/part-*.snappy.parquet`` (and Spark's own
        ``data/_SUCCESS``), then the batch's ``_SUCCESS`` when ``success``."""
        table = pq.read_table(self.local / "batches" / str(batch_id) / "data.parquet")
        folder = f"{self.bucket}/lake/cara/batches/{batch_id}/data"
        for i, rows in enumerate(np.array_split(np.arange(table.num_rows), n_parts)):
            part = table.take(pa.array(rows))
            pq.write_table(part, f"{folder}/part-{i:05d}-{uuid.uuid4()}-c000.snappy.parquet", filesystem=self.fs,
                           compression="snappy")
        with self.fs.open_output_stream(f"{folder}/_SUCCESS"):
            pass
        if success:
            self.mark_complete(batch_id)

    def mark_complete(self, batch_id: int) -> None:
        with self.fs.open_output_stream(f"{self.bucket}/lake/cara/batches/{batch_id}/_SUCCESS"):
            pass

    def keys(self, prefix: str) -> list[str]:
        selector = pafs.FileSelector(f"{self.bucket}/{prefix}", allow_not_found=True, recursive=True)
        return [i.path for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File]

    def has(self, key: str) -> bool:
        """Whether the object ``key`` (under the bucket) exists."""
        return self.fs.get_file_info(f"{self.bucket}/{key}").type == pafs.FileType.File

    def tuned(self, through: int) -> Remote:
        """Batches 0..``through`` uploaded, tuned on 0:4, initialised on 4."""
        for t in range(through + 1):
            self.upload(t)
        ok(self.run("tune", "--offline", f"{OFFLINE[0]}:{OFFLINE[1]}", "--kappa", "5", "--policy", "cara-ct",
                    "--model", "lr", "--n-estimators", "10"))
        ok(self.run("init", "--batch", str(INIT)))
        return self

    def batch_runs(self) -> dict[int, int]:
        """FINISHED batch runs per batch id."""
        from cara_mlflow.tracking import Registry

        reg = Registry(f"sqlite:///{self.db}", NAME)
        counts: dict[int, int] = {}
        for run in reg.runs.find("batch"):
            if run.status == "FINISHED":
                batch = int(run.tags["cara.batch"])
                counts[batch] = counts.get(batch, 0) + 1
        return counts

    def last_batch(self) -> int:
        return int(client(f"sqlite:///{self.db}").get_registered_model(NAME).tags["cara.last_batch"])


@pytest.fixture
def remote(s3, local_stream, tmp_path) -> Remote:
    return Remote(s3, local_stream, tmp_path)


def test_part_file_batches_on_s3_read_as_the_local_batches(remote, monkeypatch):
    for key, value in remote.s3.env.items():
        monkeypatch.setenv(key, value)
    remote.upload(3, n_parts=4)
    store = BatchStore(remote.uri)
    [info] = store.list()
    assert (info.id, info.complete, str(info.path)) == (3, True, f"{remote.uri}/batches/3")
    got = store.read(3, target="label")
    want = BatchStore(remote.local).read(3, target="label")
    np.testing.assert_array_equal(got.X, want.X)
    np.testing.assert_array_equal(got.y, want.y)
    assert str(got.data_path) == f"{remote.uri}/batches/3/data"


def test_queries_first_and_ids_with_gaps_on_s3(remote, monkeypatch):
    """``_QUERIES`` before the labels, and listing by id (gaps, padding) as on a local store."""
    from cara_mlflow.features import FeatureSpace

    for key, value in remote.s3.env.items():
        monkeypatch.setenv(key, value)
    remote.upload(2)
    table = pq.read_table(remote.local / "batches" / "8" / "data.parquet")
    queries = f"{remote.bucket}/lake/cara/batches/0008/queries"
    pq.write_table(table.drop(["label"]).slice(0, 50), f"{queries}/part-00000.parquet", filesystem=remote.fs)
    with remote.fs.open_output_stream(f"{remote.bucket}/lake/cara/batches/0008/_QUERIES"):
        pass
    store = BatchStore(remote.uri)
    infos = store.list()
    assert [(i.id, i.complete) for i in infos] == [(2, True), (8, False)] and infos[1].queries_ready
    space = FeatureSpace.fit(store.read(2, target="label").frame,
                             {c: "numeric" for c in table.column_names if c != "label"}, scaling="raw")
    assert store.read_queries(8, space=space).queries.shape == (50, len(space.columns))
    assert store.next_after(2).id == 8 and store.next_after(8) is None


def test_tune_init_step_on_s3_waits_for_success_and_retrains_from_a_uri(remote):
    remote.tuned(through=6)
    remote.upload(7, success=False)                       # the producer has not finished batch 7
    lines = ok(remote.run("step", "--all")).stdout.splitlines()
    assert [line.split()[1].rstrip(":") for line in lines[:2]] == ["5", "6"] and "waiting for batch 7" in lines[-1]
    remote.mark_complete(7)
    forced = ok(remote.run("step", "--force-retrain")).stdout
    assert forced.startswith("batch 7") and "retrain" in forced
    assert remote.batch_runs() == {INIT: 1, 5: 1, 6: 1, 7: 1} and remote.last_batch() == 7
    mlflow = client(f"sqlite:///{remote.db}")
    retrains = {r.data.tags["cara.batch"]: r.data.params["data"]
                for r in mlflow.search_runs([mlflow.get_experiment_by_name(f"cara/{NAME}").experiment_id])
                if r.data.tags.get("cara.run_type") == "retrain"}
    assert retrains["7"] == f"{remote.uri}/retrain/7"
    assert all(data == f"{remote.uri}/retrain/{t}" for t, data in retrains.items())
    assert remote.keys("lake/cara/retrain") == []          # the training rows' copy is removed after the run
    assert list(remote.cwd.iterdir()) == []                # nothing went to the working directory


def test_a_remote_store_without_a_tracking_uri_is_one_line(remote):
    remote.upload(0)
    line = one_line_error(remote.run("status", MLFLOW_TRACKING_URI=None))
    assert "MLFLOW_TRACKING_URI" in line and remote.uri in line


def test_concurrent_steps_process_each_batch_once(remote):
    remote.tuned(through=9)
    steps = [remote.popen("step", "--all", "--lock-timeout", "240") for _ in range(3)]
    outputs = [p.communicate(timeout=TIMEOUT) for p in steps]
    assert [p.returncode for p in steps] == [0, 0, 0], outputs
    processed = sorted(int(line.split()[1].rstrip(":")) for out, _ in outputs for line in out.splitlines()
                       if line.startswith("batch "))
    assert processed == list(range(5, 10))
    assert remote.batch_runs() == {t: 1 for t in range(INIT, 10)} and remote.last_batch() == 9
    assert not remote.has("lake/cara/.cara.lease")          # released


def test_an_outage_mid_step_exits_75_commits_nothing_and_the_next_step_completes(remote, tmp_path):
    remote.tuned(through=5)
    gate = tmp_path / "gate"
    gate.mkdir()
    step = remote.popen("step", "--force-retrain", CARA_TEST_PAUSE_AT=f"after-psi:{gate}")
    deadline = time.monotonic() + 120
    while not (gate / "paused").exists():
        assert step.poll() is None and time.monotonic() < deadline, step.communicate()
        time.sleep(0.05)
    remote.s3.pause()                                      # the object store stops answering mid-step
    try:
        (gate / "resume").touch()
        out, err = step.communicate(timeout=TIMEOUT)
    finally:
        remote.s3.resume()
    lines = [line for line in err.splitlines() if line.strip()]
    assert step.returncode == 75 and len(lines) == 1, (step.returncode, out, err)
    assert "object store unreachable" in lines[0] and "Traceback" not in err
    assert remote.last_batch() == INIT                     # nothing committed
    assert remote.batch_runs() == {INIT: 1}                # init's only
    done = ok(remote.run("step")).stdout
    assert done.startswith("batch 5") and remote.batch_runs() == {INIT: 1, 5: 1} and remote.last_batch() == 5


def test_a_step_whose_lease_was_taken_over_does_not_commit(remote, tmp_path):
    """The fence: a step that stalled past its lease (here: paused before its commit while another
    host's step took the lease over) finds it lost at the commit and exits 75, committing nothing."""
    import json

    remote.tuned(through=5)
    gate = tmp_path / "gate"
    gate.mkdir()
    step = remote.popen("step", CARA_TEST_PAUSE_AT=f"after-alias:{gate}")
    deadline = time.monotonic() + 120
    while not (gate / "paused").exists():
        assert step.poll() is None and time.monotonic() < deadline, step.communicate()
        time.sleep(0.05)
    thief = json.dumps({"owner": "other-host:1:beef", "expires": time.time() + 600, "ttl": 600})
    remote.s3.client().put_object(Bucket=remote.bucket, Key="lake/cara/.cara.lease", Body=thief.encode())
    (gate / "resume").touch()
    out, err = step.communicate(timeout=TIMEOUT)
    lines = [line for line in err.splitlines() if line.strip()]
    assert step.returncode == 75 and len(lines) == 1 and "taken over" in lines[0], (out, err)
    assert remote.last_batch() == INIT
    remote.s3.client().delete_object(Bucket=remote.bucket, Key="lake/cara/.cara.lease")   # the other host is done
    assert ok(remote.run("step")).stdout.startswith("batch 5") and remote.last_batch() == 5
    assert remote.batch_runs() == {INIT: 1, 5: 1}


@pytest.mark.parametrize("phase", ["after-batch-run", "after-alias"])
def test_a_step_killed_on_a_remote_store_is_redone_once_at_once(remote, phase):
    """kill -9 leaves the lease behind: the next step on this host takes it over (its holder is gone)
    rather than waiting out its 600 s, and the batch is committed once."""
    remote.tuned(through=5)
    killed = remote.run("step", "--force-retrain", **{crash_harness.KILL_ENV: phase})
    assert killed.returncode == -9 and remote.last_batch() == INIT
    assert remote.has("lake/cara/.cara.lease")              # left behind by the killed step
    done = ok(remote.run("step", "--lock-timeout", "5")).stdout
    assert done.startswith("batch 5") and remote.last_batch() == 5 and remote.batch_runs() == {INIT: 1, 5: 1}
    assert not remote.has("lake/cara/.cara.lease") and remote.keys("lake/cara/retrain") == []


def test_an_unreachable_store_exits_75(remote):
    line = one_line_error(remote.run("step", AWS_ENDPOINT_URL="http://127.0.0.1:9"), code=75)
    assert "unreachable" in line
