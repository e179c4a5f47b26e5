"""Fixtures for the serving runtime tests: an S3 API on 127.0.0.1 (moto), tiny safetensors
models built on the fly, and a counter of the S3 requests this process makes."""

from __future__ import annotations

import collections
import uuid
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture()
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """boto3 env pointing at the moto server (also set in os.environ); adds a fresh BUCKET."""
    import boto3

    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bucket = f"models-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return env | {"BUCKET": bucket}


@pytest.fixture()
def s3_calls(monkeypatch: pytest.MonkeyPatch) -> collections.Counter:
    """Counts S3 operations (GetObject, ListObjectsV2, ...) of every boto3 client made from now on."""
    import boto3

    calls: collections.Counter = collections.Counter()
    real = boto3.client

    def client(*a, **kw):  # type: ignore[no-untyped-def]
        c = real(*a, **kw)
        c.meta.events.register("before-call.s3.*", lambda model, **_: calls.update([model.name]))
        return c

    monkeypatch.setattr(boto3, "client", client)
    return calls


def make_model(root: Path, *, shards: int = 2, weights: str = "safetensors", elems: int = 4096,
               extra: dict[str, bytes] | None = None) -> Path:
    """A tiny model directory: config.json plus ``shards`` weight files of ``elems`` float32s
    (safetensors, or pickle-named files for the filter tests)."""
    from safetensors.numpy import save_file

    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"architectures": ["TinyForCausalLM"], "hidden_size": 8}')
    rng = np.random.default_rng(len(str(root)))
    for i in range(shards):
        arr = {"w": rng.standard_normal(elems).astype(np.float32)}
        if weights == "safetensors":
            save_file(arr, str(root / f"model-{i:05d}-of-{shards:05d}.safetensors"))
        else:
            (root / f"pytorch_model-{i:05d}-of-{shards:05d}.bin").write_bytes(arr["w"].tobytes())
    for name, data in (extra or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def upload(local: Path, bucket: str, prefix: str, endpoint: str) -> str:
    import boto3

    c = boto3.client("s3", endpoint_url=endpoint)
    for p in sorted(local.rglob("*")):
        if p.is_file():
            c.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(local).as_posix()}")
    return f"s3://{bucket}/{prefix}"
