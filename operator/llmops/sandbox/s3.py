"""An S3-compatible server on 127.0.0.1 for checkpoints and models (moto's threaded server).

State lives in memory for the life of the server. Clients find it through the standard
``AWS_ENDPOINT_URL_S3`` variable (boto3 and the AWS CLI honour it) plus static credentials;
``S3Server.env()`` returns all of them, ready to hand to pods or a subprocess.
"""

from __future__ import annotations

import socket
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
    _server: object | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> S3Server:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per S3 request on the console

        if not self.port:
            self.port = free_port(self.host)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()  # type: ignore[attr-defined]
        return self

    def create_bucket(self, name: str) -> None:
        """Create a bucket (idempotent), e.g. the sandbox's default checkpoint bucket."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name=REGION)
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None

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
