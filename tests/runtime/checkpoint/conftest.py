"""Fixtures for the checkpoint engine tests: local stores and an S3 API on 127.0.0.1 (moto)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture()
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Credentials/endpoint env for boto3 against the moto server; returns a fresh bucket."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    bucket = f"ckpt-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(params=["local", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """The same test against a local directory and against S3 (moto)."""
    if request.param == "local":
        return str(tmp_path / "ckpt")
    bucket = request.getfixturevalue("s3_env")
    return f"s3://{bucket}/runs/r1"
