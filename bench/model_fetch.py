"""Model fetch benchmark: the verified fetcher against a plain parallel boto3 copy, and the
start time of a replica that finds the model cached against one that downloads it.

    python bench/model_fetch.py [--files 8] [--file-mb 32] [--reps 5] [--concurrency 16] [--dir D]

A multi-file model (--files safetensors-named files of --file-mb MB of random bytes, plus a
config.json) is uploaded to an S3 API (moto, started as its own process on 127.0.0.1).
Every repetition measures, in alternating order so machine noise hits them alike:

- raw:   a plain parallel boto3 copy of the same objects (one thread per file, each
         ``download_file`` with the same part size), no hashing, no marker;
- miss:  ``fetch()`` into an empty cache (LIST, ranged parallel GETs through one transfer
         manager, sha256 of every file, manifest + completion marker, atomic rename);
- hit:   ``fetch()`` again into the same cache (one LIST, marker + size check);
- pinned hit: ``fetch()`` with the manifest digest pinned (no request at all).

Printed (medians): fetch throughput / raw copy throughput (target >= 0.8) and hit start
time / miss start time (target <= 0.1). Loopback S3: the figures say what the fetcher adds
on top of the transfer path, not what S3 does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import numpy as np
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from llmops_runtime.serve import fetch as F

MB = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def raw_copy(client, bucket: str, keys: list[str], into: Path, chunk: int) -> float:  # type: ignore[no-untyped-def]
    cfg = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk)
    into.mkdir(parents=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(keys)) as pool:
        list(pool.map(lambda k: client.download_file(bucket, k, str(into / k.rsplit("/", 1)[-1]), Config=cfg), keys))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--file-mb", type=float, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--chunk-mib", type=int, default=8)
    ap.add_argument("--dir", help="scratch directory (default: a temp dir)")
    a = ap.parse_args(argv)
    chunk = a.chunk_mib << 20
    scratch = Path(tempfile.mkdtemp(prefix="model-fetch-", dir=a.dir))
    proc, endpoint = start_moto()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL_S3": endpoint})
    try:
        client = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=64))
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        rng = np.random.default_rng(0)
        size = int(a.file_mb * MB)
        keys = []
        for i in range(a.files):
            key = f"model/model-{i:05d}-of-{a.files:05d}.safetensors"
            client.put_object(Bucket=bucket, Key=key, Body=rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            keys.append(key)
        client.put_object(Bucket=bucket, Key="model/config.json", Body=b'{"architectures": ["Bench"]}')
        total = a.files * size
        uri = f"s3://{bucket}/model"
        raw_t, miss_t, hit_t, pin_t = [], [], [], []
        for rep in range(a.reps):
            cache = scratch / f"cache-{rep}"

            def miss() -> None:
                r = F.fetch(F.FetchRequest(uri=uri, dest=cache, concurrency=a.concurrency, chunk_bytes=chunk))
                assert not r.cache_hit
                miss_t.append(r.seconds)
                hit = F.fetch(F.FetchRequest(uri=uri, dest=cache))
                assert hit.cache_hit
                hit_t.append(hit.seconds)
                pinned = F.fetch(F.FetchRequest(uri=uri, dest=scratch / f"pin-{rep}", manifest_sha256=r.digest,
                                                manifest=str(r.path / "llmops-manifest.json")))
                pin = F.fetch(F.FetchRequest(uri=uri, dest=scratch / f"pin-{rep}", manifest_sha256=r.digest))
                assert pin.cache_hit and not pinned.cache_hit
                pin_t.append(pin.seconds)

            def raw() -> None:
                raw_t.append(raw_copy(client, bucket, keys, scratch / f"raw-{rep}", chunk))

            for step in ((raw, miss) if rep % 2 == 0 else (miss, raw)):
                step()
            for d in scratch.iterdir():  # keep the page cache/disk footprint bounded
                shutil.rmtree(d, ignore_errors=True)
        med = statistics.median
        raw_s, miss_s, hit_s, pin_s = med(raw_t), med(miss_t), med(hit_t), med(pin_t)
        print(f"model: {a.files} files x {a.file_mb:g} MB = {total / MB:.0f} MB on S3 loopback (moto), {a.reps} reps, medians")
        print(f"{'':34}{'fetch':>12}{'raw copy':>12}")
        print(f"{'seconds':34}{miss_s:12.3f}{raw_s:12.3f}")
        print(f"{'throughput MB/s':34}{total / MB / miss_s:12.1f}{total / MB / raw_s:12.1f}")
        print(f"{'start seconds (hit / pinned hit)':34}{hit_s:12.4f}{pin_s:12.4f}")
        print(f"fetch throughput / raw copy        {raw_s / miss_s:.3f}   (target >= 0.8)")
        print(f"cache-hit start / miss start       {hit_s / miss_s:.4f}  (target <= 0.1)")
        print(f"pinned-hit start / miss start      {pin_s / miss_s:.4f}  (target <= 0.1)")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
