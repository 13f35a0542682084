"""A private PostgreSQL cluster and an ``mlflow server`` on loopback, for the server tests.

PostgreSQL comes from Debian's packages (``.ci/run`` installs them when missing); the cluster
lives in a temporary directory with trust authentication on 127.0.0.1 only, and the tracking
server uses it as its backend store (``postgresql+psycopg2://``, see MLFLOW_NOTES.md §5) with a
local artifacts destination. The tests can stop and restart the MLflow server to simulate an
outage. :meth:`PgMlflowServer.start` returns the reason when something cannot start, so the
tests skip with it — except where ``CARA_REQUIRE_SERVER=1`` (CI), where they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgMlflowServer:
    """PostgreSQL + ``mlflow server`` under ``root``; ``uri`` is the tracking URI clients use."""

    def __init__(self):
        # Not under pytest's tmp_path: that is 0700 root's, and the cluster runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="cara-pg-"))
        self.pgdata = self.root / "pgdata"
        self.artifacts = self.root / "artifacts"
        self.pg_port, self.port = free_port(), free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend = f"postgresql+psycopg2://mlflow:mlflow@127.0.0.1:{self.pg_port}/mlflow"
        self.server: subprocess.Popen | None = None
        self.pg_started = False
        self.log = self.root / "mlflow-server.log"

    # -- PostgreSQL -----------------------------------------------------------------------
    def _as_postgres(self, args: list[str]) -> list[str]:
        """initdb and pg_ctl refuse to run as root: run them as the postgres user then."""
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return args

    def _pg_bin(self, name: str) -> str | None:
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        return found[-1] if found else shutil.which(name)

    def start(self) -> str | None:
        """Start both; None when up, else the reason they are not."""
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return "psycopg2 is not installed (pip install psycopg2-binary)"
        initdb, pg_ctl, psql = self._pg_bin("initdb"), self._pg_bin("pg_ctl"), shutil.which("psql")
        if not (initdb and pg_ctl and psql):
            return "PostgreSQL is not installed (apt-get install postgresql)"
        self.pgdata.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.pgdata, "postgres")
            os.chmod(self.root, 0o755)
        steps = [
            self._as_postgres([initdb, "-D", str(self.pgdata), "-U", "postgres", "--auth=trust"]),
            self._as_postgres([pg_ctl, "-D", str(self.pgdata), "-w", "-t", "60", "-l", str(self.pgdata / "pg.log"),
                               "-o", f"-p {self.pg_port} -k {self.pgdata} -c listen_addresses=127.0.0.1", "start"]),
        ]
        for args in steps:
            done = subprocess.run(args, capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                return f"{Path(args[-1]).name if args[-1] != 'start' else 'pg_ctl start'} failed: " \
                       f"{(done.stderr or done.stdout).strip()[-300:]}"
        self.pg_started = True
        for sql in ("CREATE USER mlflow PASSWORD 'mlflow'", "CREATE DATABASE mlflow OWNER mlflow"):
            done = subprocess.run([psql, "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-c", sql],
                                  capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                return f"psql failed: {done.stderr.strip()[-300:]}"
        return self.start_server()

    # -- mlflow server ----------------------------------------------------------------------
    def start_server(self, timeout: float = 180) -> str | None:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.artifacts.mkdir(exist_ok=True)
        log = open(self.log, "a")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
             "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                return f"mlflow server exited ({self.server.returncode}): {self.log.read_text()[-400:]}"
            if self.healthy():
                return None
            time.sleep(0.3)
        return f"mlflow server not healthy after {timeout:g} s: {self.log.read_text()[-400:]}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop_server(self) -> None:
        """Stop the tracking server (all its workers) and wait until its port is closed."""
        if self.server is None:
            return
        try:
            os.killpg(self.server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.server.wait(timeout=30)
        self.server = None
        deadline = time.monotonic() + 30
        while self.healthy() and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        self.stop_server()
        if self.pg_started:
            pg_ctl = self._pg_bin("pg_ctl")
            subprocess.run(self._as_postgres([pg_ctl, "-D", str(self.pgdata), "-m", "immediate", "stop"]),
                           capture_output=True, timeout=60)
            self.pg_started = False
        shutil.rmtree(self.root, ignore_errors=True)
