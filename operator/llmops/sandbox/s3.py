"""An S3-compatible server on 127.0.0.1 for checkpoints and models: moto's server, in a
process of its own.

State lives in memory for the life of the server, and belongs to that server alone: moto keeps
its backends in module globals, so servers started as threads of one process would share every
bucket (a second sandbox in a test session would find the first one's checkpoints). Clients
find it through the standard ``AWS_ENDPOINT_URL_S3`` variable (boto3 and the AWS CLI honour it)
plus static credentials; ``S3Server.env()`` returns all of them, ready to hand to pods or a
subprocess.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

ACCESS_KEY = "sandbox"  # moto accepts any credentials; fixed ones keep env reproducible
SECRET_KEY = "sandbox-secret"
REGION = "us-east-1"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    host: str = "127.0.0.1"
    port: int = 0
    _server: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> S3Server:
        """Start ``python -m moto.server`` on a free port and wait until it accepts connections."""
        for _ in range(3):  # the free port can be taken between choosing it and binding it
            self.port = self.port or free_port(self.host)
            self._server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            if self._wait_ready(self._server, timeout):
                return self
            self.stop()
            self.port = 0
        raise RuntimeError(f"the S3 server (moto) did not start on {self.host}")

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    @property
    def pid(self) -> int:
        assert self._server is not None, "not started"
        return self._server.pid

    def create_bucket(self, name: str) -> None:
        """Create a bucket (idempotent), e.g. the sandbox's default checkpoint bucket."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name=REGION)
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)

    def stop(self) -> None:
        proc, self._server = self._server, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
