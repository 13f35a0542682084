"""A local S3-compatible server (moto's ``moto_server``) on loopback, for the object-store tests.

The real HTTP protocol, real boto3 clients and real conditional writes (moto honours
``If-None-Match: *`` and ``If-Match`` on puts and deletes); buckets and objects live in the
server's memory. The tests can simulate an outage where connections hang (:meth:`S3Server.pause`,
SIGSTOP: the kernel still accepts connections, nothing answers) and turn on moto's credential
checks (:meth:`S3Server.require_auth`). Starting takes about 2 s, so tests share one server per
module or session::

    with S3Server() as s3:
        s3.make_bucket("cara")
        os.environ.update(s3.env)    # for code that builds its own client (restore it afterwards)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .pgserver import free_port

START_TIMEOUT = 20.0


class S3Server:
    """``moto_server`` on ``endpoint``; started by :meth:`start` or ``with``, stopped by :meth:`stop`."""

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="cara-moto-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """The standard variables that point boto3 (and pyarrow) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}

    def start(self) -> S3Server:
        """Start the server and wait until it answers; RuntimeError (with its log) if it does not."""
        binary = Path(sys.executable).parent / "moto_server"
        if not binary.exists():
            raise RuntimeError(f"{binary} not found; pip install 'moto[server]'")
        with open(self.log, "ab") as log:
            # A session of its own: pause() and stop() signal its whole process group.
            self.process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                state = f"exited ({self.process.returncode})" if self.process.poll() is not None else \
                    f"not answering after {START_TIMEOUT:g} s"
                self.stop()
                raise RuntimeError(f"moto_server on {self.endpoint} {state}; its log:\n{self._log_tail()}")
            time.sleep(0.1)
        return self

    def client(self, **overrides):
        """A boto3 S3 client for this server (keyword arguments override the defaults)."""
        import boto3

        options = dict(endpoint_url=self.endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                       region_name="us-east-1")
        return boto3.session.Session().client("s3", **{**options, **overrides})

    def make_bucket(self, name: str) -> None:
        """Create bucket ``name`` (S3 names: 3 to 63 characters, lower case)."""
        self.client().create_bucket(Bucket=name)

    def require_auth(self, on: bool) -> None:
        """Turn moto's credential checks on (keys must belong to IAM users of the server) or off."""
        count = b"0" if on else b"inf"
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=count, method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def pause(self) -> None:
        """An outage where connections hang: SIGSTOP the server (the kernel still accepts connections)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """End the outage of :meth:`pause` (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (paused or not) and wait for it."""
        if self.process is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self.log.unlink(missing_ok=True)

    def _signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signum)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/", timeout=0.5) as response:
                response.read()
            return True
        except urllib.error.HTTPError:
            return True  # an HTTP error is an answer
        except OSError:
            return False

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]
