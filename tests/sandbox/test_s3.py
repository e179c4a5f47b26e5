"""The sandbox S3 server: moto on a free 127.0.0.1 port, reachable by an unmodified boto3
client through AWS_ENDPOINT_URL_S3 and the returned credentials; state survives requests."""

from __future__ import annotations

import boto3
import pytest
from llmops.sandbox.s3 import S3Server


def test_boto3_put_get_list_through_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with S3Server() as s3:
        assert s3.endpoint.startswith("http://127.0.0.1:") and s3.port > 0
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        client = boto3.client("s3")  # endpoint from AWS_ENDPOINT_URL_S3, as pods and the operator do
        client.create_bucket(Bucket="ckpt")
        client.put_object(Bucket="ckpt", Key="run/step-10/manifest.json", Body=b"{}")
        assert client.get_object(Bucket="ckpt", Key="run/step-10/manifest.json")["Body"].read() == b"{}"
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="ckpt")["Contents"]]
        assert keys == ["run/step-10/manifest.json"]


def test_two_servers_in_one_process_share_nothing() -> None:
    """Each sandbox's S3 is its own: a second one started in the same test session finds no
    bucket or checkpoint of the first (moto's module-global state stays in each server's process)."""
    with S3Server() as first, S3Server() as second:
        a = boto3.client("s3", endpoint_url=first.endpoint, **_creds(first))
        b = boto3.client("s3", endpoint_url=second.endpoint, **_creds(second))
        a.create_bucket(Bucket="ckpt")
        a.put_object(Bucket="ckpt", Key="job/step-40/manifest.json", Body=b"{}")
        assert [x["Name"] for x in b.list_buckets()["Buckets"]] == []
    with S3Server() as third:
        c = boto3.client("s3", endpoint_url=third.endpoint, **_creds(third))
        assert c.list_buckets()["Buckets"] == []


def _creds(s3: S3Server) -> dict[str, str]:
    env = s3.env()
    return {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
            "region_name": env["AWS_DEFAULT_REGION"]}
