"""The model fetcher: S3 (moto on 127.0.0.1), local/pvc and staged-HF sources into a cache;
the safetensors-only filter; sha256 manifest verification naming the file; cache hits with
no S3 GET; one download among concurrent fetchers; atomicity under SIGKILL; exit codes and
termination messages of the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from llmops.api.runtime_env import FetchExit, parse_termination_message
from llmops_runtime.serve import fetch as F
from llmops_runtime.serve import manifest as M

from .conftest import make_model, upload

ROOT = Path(__file__).resolve().parents[2]


def _req(uri: str, dest: Path, **kw) -> F.FetchRequest:  # type: ignore[no-untyped-def]
    return F.FetchRequest(uri=uri, dest=dest, **kw)


def _cli(args: list[str], env: dict[str, str], tmp: Path) -> subprocess.Popen:
    full = os.environ | env | {"LLMOPS_TERMINATION_LOG": str(tmp / f"term-{time.monotonic_ns()}")}
    return subprocess.Popen([sys.executable, "-m", "llmops_runtime.serve.fetch", *args],
                            env=full, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_s3_fetch_verifies_and_second_fetch_is_a_cache_hit_without_get(tmp_path, s3_env, s3_calls) -> None:
    src = make_model(tmp_path / "m", shards=3, elems=600_000)  # 2.4 MB shards: ranged parts at 1 MiB
    uri = upload(src, s3_env["BUCKET"], "llama/v1", s3_env["AWS_ENDPOINT_URL_S3"])
    s3_calls.clear()
    res = F.fetch(_req(uri, tmp_path / "cache", chunk_bytes=1 << 20))
    assert not res.cache_hit and res.files == 4
    assert res.bytes == sum(p.stat().st_size for p in src.iterdir())
    for p in src.iterdir():
        assert (res.path / p.name).read_bytes() == p.read_bytes()
    assert s3_calls["GetObject"] >= 3 * 3  # each 2.4 MB shard came as >= 3 ranged GETs
    marker = json.loads((res.path / F.MARKER).read_text())
    assert marker["digest"] == res.digest == M.digest((res.path / M.DEFAULT_NAME).read_bytes())

    s3_calls.clear()
    again = F.fetch(_req(uri, tmp_path / "cache"))
    assert again.cache_hit and again.path == res.path and again.digest == res.digest
    assert s3_calls["GetObject"] == 0 and s3_calls["HeadObject"] == 0  # one LIST decides it

    s3_calls.clear()
    pinned = F.fetch(_req(uri, tmp_path / "cache2", manifest_sha256=res.digest, manifest="/" + str(res.path / M.DEFAULT_NAME).lstrip("/")))
    assert not pinned.cache_hit and pinned.digest == res.digest
    s3_calls.clear()
    hit = F.fetch(_req(uri, tmp_path / "cache2", manifest_sha256=res.digest))
    assert hit.cache_hit and sum(s3_calls.values()) == 0  # pinned digest: no request at all


@pytest.mark.parametrize("scheme", ["abs", "file", "pvc"])
def test_local_sources_link_or_copy_into_the_cache(tmp_path, monkeypatch, scheme) -> None:
    src = make_model(tmp_path / "vol" / "claim" / "models" / "m")
    uri = {"abs": str(src), "file": f"file://{src}", "pvc": "pvc://claim/models/m"}[scheme]
    monkeypatch.setenv("LLMOPS_PVC_ROOT", str(tmp_path / "vol"))
    res = F.fetch(_req(uri, tmp_path / "cache", link="current"))
    assert {p.name for p in res.path.iterdir()} == {p.name for p in src.iterdir()} | {M.DEFAULT_NAME, F.MARKER}
    assert (tmp_path / "cache" / "current").resolve() == res.path.resolve()
    assert F.fetch(_req(uri, tmp_path / "cache")).cache_hit


def test_changed_source_gets_a_new_key(tmp_path) -> None:
    src = make_model(tmp_path / "m")
    first = F.fetch(_req(str(src), tmp_path / "cache"))
    (src / "config.json").write_text('{"changed": true}')
    second = F.fetch(_req(str(src), tmp_path / "cache"))
    assert not second.cache_hit and second.key != first.key and first.path.exists()


@pytest.mark.parametrize(
    ("weights", "allow", "outcome"),
    [
        ("pickle", False, FetchExit.PICKLE_NOT_ALLOWED),
        ("pickle", True, FetchExit.OK),
        ("mixed", False, FetchExit.OK),  # pickle skipped, safetensors kept
        ("none", False, FetchExit.MODEL_NOT_FOUND),
    ],
)
def test_safetensors_only_filter(tmp_path, weights, allow, outcome) -> None:
    if weights == "mixed":
        src = make_model(tmp_path / "m", extra={"pytorch_model.bin": b"\x80\x04pickle", "training_args.bin": b"x"})
    elif weights == "none":
        src = make_model(tmp_path / "m", shards=0)
    else:
        src = make_model(tmp_path / "m", weights=weights)
    req = _req(str(src), tmp_path / "cache", allow_pickle=allow)
    if outcome != FetchExit.OK:
        with pytest.raises(F.FetchError) as ei:
            F.fetch(req)
        assert ei.value.code == outcome
        if outcome == FetchExit.PICKLE_NOT_ALLOWED:
            assert str(ei.value).startswith("pytorch_model-00000-of-00002.bin:")
        assert not list((tmp_path / "cache").glob("src-*"))
        return
    res = F.fetch(req)
    names = {p.name for p in res.path.iterdir()}
    assert any(n.endswith(".bin") for n in names) == allow
    if weights == "mixed":
        assert json.loads((res.path / F.MARKER).read_text())["skippedPickle"] == ["pytorch_model.bin", "training_args.bin"]


def test_digest_mismatch_names_the_file_and_pinned_manifest_is_checked(tmp_path, s3_env) -> None:
    src = make_model(tmp_path / "m")
    M.main([str(src)])
    good = M.digest((src / M.DEFAULT_NAME).read_bytes())
    victim = "model-00001-of-00002.safetensors"
    data = bytearray((src / victim).read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes: only the sha256 can tell
    (src / victim).write_bytes(bytes(data))
    uri = upload(src, s3_env["BUCKET"], "bad", s3_env["AWS_ENDPOINT_URL_S3"])
    for u in (str(src), uri):
        with pytest.raises(F.FetchError) as ei:
            F.fetch(_req(u, tmp_path / "cache"))
        assert ei.value.code == FetchExit.DIGEST_MISMATCH and str(ei.value).startswith(victim + ": sha256")
        assert not list((tmp_path / "cache").glob("src-*")) and not list((tmp_path / "cache").glob("sha256-*"))
        assert not list((tmp_path / "cache").glob(".tmp-*"))  # failed fetches clean up
    with pytest.raises(F.FetchError) as ei:
        F.fetch(_req(uri, tmp_path / "cache", manifest_sha256=hashlib.sha256(b"other").hexdigest()))
    assert ei.value.code == FetchExit.DIGEST_MISMATCH and str(ei.value).startswith("manifest: sha256")
    with pytest.raises(F.FetchError) as ei:  # right manifest, wrong file
        F.fetch(_req(uri, tmp_path / "cache", manifest_sha256=good))
    assert ei.value.code == FetchExit.DIGEST_MISMATCH and victim in str(ei.value)


def test_manifest_listing_a_missing_file_is_model_not_found(tmp_path) -> None:
    src = make_model(tmp_path / "m")
    M.main([str(src)])
    (src / "config.json").unlink()
    with pytest.raises(F.FetchError) as ei:
        F.fetch(_req(str(src), tmp_path / "cache"))
    assert ei.value.code == FetchExit.MODEL_NOT_FOUND and str(ei.value).startswith("config.json:")


def _stage_hf(root: Path, name: str, commit: str, branch: str = "main") -> Path:
    """Lay out an HF hub cache snapshot: blobs named by sha256, snapshot symlinks, refs."""
    repo = root / ("models--" + name.replace("/", "--"))
    model = make_model(root / "_src")
    for p in model.iterdir():
        data = p.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / p.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / branch).write_text(commit)
    return repo


def test_hf_snapshot_resolves_pinned_revision_and_checks_blob_names(tmp_path, monkeypatch) -> None:
    commit = "a" * 40
    repo = _stage_hf(tmp_path / "hub", "org/tiny", commit)
    monkeypatch.setenv("LLMOPS_HF_SNAPSHOT_ROOT", str(tmp_path / "hub"))
    res = F.fetch(_req("hf://org/tiny", tmp_path / "cache", revision="main"))
    assert json.loads((res.path / F.MARKER).read_text())["uri"] == f"hf://org/tiny@{commit}"
    assert not (res.path / "config.json").is_symlink()
    for rev, code in [(None, FetchExit.UNSUPPORTED_SOURCE), ("b" * 40, FetchExit.MODEL_NOT_FOUND), ("dev", FetchExit.MODEL_NOT_FOUND)]:
        with pytest.raises(F.FetchError) as ei:
            F.fetch(_req("hf://org/tiny", tmp_path / "c2", revision=rev))
        assert ei.value.code == code
    blob = next(p for p in (repo / "blobs").iterdir() if p.stat().st_size > 1000)
    blob.write_bytes(b"\0" * blob.stat().st_size)  # the blob no longer matches its own name
    with pytest.raises(F.FetchError) as ei:
        F.fetch(_req(f"hf://org/tiny@{commit}", tmp_path / "c3"))
    assert ei.value.code == FetchExit.DIGEST_MISMATCH and ".safetensors: sha256" in str(ei.value)


@pytest.mark.parametrize(
    ("uri", "code", "reason"),
    [
        ("oci://registry/model:tag", FetchExit.UNSUPPORTED_SOURCE, "UnsupportedModelSource"),
        ("/nonexistent/model", FetchExit.MODEL_NOT_FOUND, "ModelNotFound"),
        ("s3://{bucket}/absent", FetchExit.MODEL_NOT_FOUND, "ModelNotFound"),
        ("s3://no-such-bucket-xyz/m", FetchExit.MODEL_NOT_FOUND, "ModelNotFound"),
    ],
)
def test_cli_exit_codes_and_termination_message(tmp_path, s3_env, uri, code, reason) -> None:
    term = tmp_path / "term"
    env = {k: v for k, v in s3_env.items() if k != "BUCKET"} | {"LLMOPS_TERMINATION_LOG": str(term)}
    r = subprocess.run(
        [sys.executable, "-m", "llmops_runtime.serve.fetch", "--uri", uri.format(bucket=s3_env["BUCKET"]), "--dest", str(tmp_path / "c")],
        env=os.environ | env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == code, r.stderr
    got_reason, detail, _ = parse_termination_message(term.read_text())
    assert got_reason == reason and detail


def test_cli_success_reports_digest_bytes_seconds(tmp_path, s3_env) -> None:
    src = make_model(tmp_path / "m")
    uri = upload(src, s3_env["BUCKET"], "ok", s3_env["AWS_ENDPOINT_URL_S3"])
    p = _cli(["--uri", uri, "--dest", str(tmp_path / "c")], {k: v for k, v in s3_env.items() if k != "BUCKET"}, tmp_path)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    reason, _, fields = parse_termination_message(out)
    assert reason == "ModelVerified" and fields["cache"] == "miss" and int(fields["bytes"]) > 0
    assert fields["digest"].startswith("sha256:") and float(fields["seconds"]) > 0
    assert "MB/s" in out


def test_concurrent_fetchers_download_once(tmp_path, s3_env) -> None:
    src = make_model(tmp_path / "m", shards=2, elems=250_000)  # 2 MB in all, capped at 2 MB/s
    uri = upload(src, s3_env["BUCKET"], "shared", s3_env["AWS_ENDPOINT_URL_S3"])
    env = {k: v for k, v in s3_env.items() if k != "BUCKET"}
    procs = [_cli(["--uri", uri, "--dest", str(tmp_path / "c"), "--max-bytes-per-second", "2e6"], env, tmp_path) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    caches = sorted(parse_termination_message(o)[2]["cache"] for o, _ in outs)
    assert caches == ["hit", "hit", "miss"]
    keys = {parse_termination_message(o)[2]["key"] for o, _ in outs}
    assert len(keys) == 1


def test_killed_mid_fetch_leaves_no_marker_and_rerun_completes(tmp_path, s3_env) -> None:
    src = make_model(tmp_path / "m", shards=2, elems=500_000)  # 4 MB at 1 MB/s: ~4 s
    uri = upload(src, s3_env["BUCKET"], "kill", s3_env["AWS_ENDPOINT_URL_S3"])
    env = {k: v for k, v in s3_env.items() if k != "BUCKET"}
    cache = tmp_path / "c"
    p = _cli(["--uri", uri, "--dest", str(cache), "--max-bytes-per-second", "1e6", "--chunk-mib", "1"], env, tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until bytes are landing in the temp dir
        tmp = list(cache.glob(".tmp-*"))
        if tmp and sum(f.stat().st_size for f in tmp[0].rglob("*") if f.is_file()) > 0:
            break
        assert p.poll() is None, p.communicate()
        time.sleep(0.05)
    else:
        pytest.fail("fetch never started writing")
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert not list(cache.glob("src-*")) and not list(cache.rglob(F.MARKER))
    res = F.fetch(_req(uri, cache))
    assert not res.cache_hit and (res.path / F.MARKER).is_file()
    assert not list(cache.glob(".tmp-*"))  # the killed fetcher's leftovers were cleared
    for f in src.iterdir():
        assert (res.path / f.name).read_bytes() == f.read_bytes()


def test_cache_entry_with_a_truncated_file_is_refetched(tmp_path) -> None:
    src = make_model(tmp_path / "m")
    res = F.fetch(_req(str(src), tmp_path / "c"))
    victim = next(res.path.glob("*.safetensors"))
    os.unlink(victim)  # hard link: break it before truncating so the source stays intact
    victim.write_bytes(b"short")
    again = F.fetch(_req(str(src), tmp_path / "c"))
    assert not again.cache_hit and victim.read_bytes() == (src / victim.name).read_bytes()
