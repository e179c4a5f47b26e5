"""Cold start of an InferenceService on real vLLM, split into its phases, against a bare vLLM
server started on the same local files.

    python bench/serving_cold_start.py [--reps 1] [--dir D]

A tiny Llama (hidden 128, 2 layers; tests/finetune/finetune_fixtures.py) is uploaded with an
llmops manifest to the sandbox's S3. On one sandbox node running real vLLM (``serving="vllm"``,
the vLLM venv ``make install`` creates), each repetition measures, from the pod's creation:

- miss: the first replica, its model cache (a PVC) empty;
- hit:  a second replica on the same cache (its fetch finds the verified copy);
- bare: ``python -m vllm.entrypoints.openai.api_server`` on the cached files, the same flags,
        started by hand: no pod, no fetch, no probes (the floor).

Phases (pod creation -> first token): **fetch** (the fetch-model init container, its own
``seconds=`` figure), **start** (fetch done -> vLLM's weights loaded: process start, imports,
model construction, weight load; vLLM's own ``Loading weights took`` is printed beside it),
**engine** (weights loaded -> KV cache allocated and engine ready: vLLM's ``init engine``
figure), **serve** (engine ready -> first token of a one-token completion, through the API
server's start and the readiness probe). Printed: the phases of miss, hit and bare side by
side, and the ratios miss/bare, hit/bare and hit/miss of the whole cold start, all from this
run. Container logs come from the node agent's files, so the split needs no vLLM flags.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "finetune"))

NS, NAME = "default", "bench"
LOAD_RE = re.compile(r"Loading weights took ([0-9.]+) s")
ENGINE_RE = re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([0-9.]+) s")
LOG_TIME_RE = re.compile(r"(\d\d-\d\d \d\d:\d\d:\d\d)")


def build(root: Path) -> Path:
    from finetune_fixtures import build_model

    return build_model(root / "model", hidden_size=128, max_positions=256)


def first_token(url: str, model: str, deadline: float) -> float:
    """Poll until a one-token completion answers; the wall time it answered."""
    body = json.dumps({"model": model, "prompt": "the cat", "max_tokens": 1}).encode()
    while time.time() < deadline:
        try:
            req = urllib.request.Request(f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                json.load(r)
            return time.time()
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url}: no first token in time")


def log_time(line: str, year: int) -> float:
    """vLLM's log line time (local time, no year) -> epoch seconds."""
    stamp = LOG_TIME_RE.search(line)
    assert stamp, line
    return datetime.strptime(f"{year}-{stamp.group(1)}", "%Y-%m-%d %H:%M:%S").timestamp()


def split_log(text: str) -> dict[str, float]:
    """Wall times of 'weights loaded' and 'engine ready' and vLLM's own figures, from its log."""
    year = datetime.now().year
    out: dict[str, float] = {}
    for line in text.splitlines():
        if (m := LOAD_RE.search(line)) and "loaded_at" not in out:
            out["loaded_at"], out["vllm_load_s"] = log_time(line, year), float(m.group(1))
        if (m := ENGINE_RE.search(line)) and "engine_at" not in out:
            out["engine_at"], out["vllm_engine_s"] = log_time(line, year), float(m.group(1))
    return out


def parse_rfc3339(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pod_start(sb, kube, pod: dict, deadline: float) -> dict[str, float]:  # noqa: ANN001
    """Phases of one replica, from its creation to its first token."""
    ip = pod["status"]["podIP"]
    created = parse_rfc3339(pod["metadata"]["creationTimestamp"])
    done = first_token(f"http://{ip}:8000", NAME, deadline)
    pod = kube.get("v1", "Pod", NS, pod["metadata"]["name"])
    fetch = next(c for c in pod["status"]["initContainerStatuses"] if c["name"] == "fetch-model")["state"]["terminated"]
    fetched = parse_rfc3339(fetch["finishedAt"])
    marks = split_log(sb.logs(NS, pod["metadata"]["name"], "server") or "")
    return {"fetch": fetched - created, "start": marks["loaded_at"] - fetched, "engine": marks["engine_at"] - marks["loaded_at"],
            "serve": done - marks["engine_at"], "total": done - created, "vllm_load_s": marks["vllm_load_s"],
            "vllm_engine_s": marks["vllm_engine_s"], "cache_hit": float("cache=hit" in fetch.get("message", ""))}


def wait_pods(kube, count: int, deadline: float, exclude: set[str] = frozenset()) -> list[dict]:  # noqa: ANN001
    while time.time() < deadline:
        pods = [p for p in kube.list("v1", "Pod", NS, f"llmops.dev/owner-name={NAME}")
                if p["metadata"]["uid"] not in exclude and (p.get("status") or {}).get("podIP")
                and not p["metadata"].get("deletionTimestamp")]
        if len(pods) >= count:
            return pods
        time.sleep(0.5)
    raise TimeoutError("pods did not appear")


def bare(model_dir: Path, args: list[str], port: int, deadline: float, log: Path) -> dict[str, float]:
    from llmops.sandbox.node.runtimes import VLLM_CPU_ENV, vllm_venv

    env = {**os.environ, **dict(VLLM_CPU_ENV)}
    flags = [a for a in args[1:]]
    flags[flags.index("--port") + 1] = str(port)
    t0 = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen([str(vllm_venv() / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                                 *flags, "--host", "127.0.0.1"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        done = first_token(f"http://127.0.0.1:{port}", NAME, deadline)
    finally:
        proc.terminate()
        proc.wait(60)
    marks = split_log(log.read_text())
    return {"fetch": 0.0, "start": marks["loaded_at"] - t0, "engine": marks["engine_at"] - marks["loaded_at"],
            "serve": done - marks["engine_at"], "total": done - t0, "vllm_load_s": marks["vllm_load_s"],
            "vllm_engine_s": marks["vllm_engine_s"], "cache_hit": 1.0}


def one_rep(sb, kube, digest: str, timeout: float, workdir: Path) -> dict[str, dict[str, float]]:  # noqa: ANN001
    from llmops.builders import inference as B
    from llmops.sandbox.run import DEFAULT_BUCKET

    body = {"apiVersion": "llmops.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": NAME, "namespace": NS},
            "spec": {"model": {"uri": f"s3://{DEFAULT_BUCKET}/models/bench", "manifestSha256": digest},
                     "engine": {"maxModelLen": 256}, "cache": {"size": "1Gi"}, "minReplicas": 1, "maxReplicas": 2}}
    deadline = time.time() + timeout
    kube.apply(body)
    (first,) = wait_pods(kube, 1, deadline)
    miss = pod_start(sb, kube, first, deadline)
    kube.apply({**body, "spec": {**body["spec"], "minReplicas": 2}})
    (second,) = wait_pods(kube, 1, deadline, exclude={first["metadata"]["uid"]})
    hit = pod_start(sb, kube, second, deadline)
    server = next(c for c in kube.get("apps/v1", "Deployment", NS, NAME)["spec"]["template"]["spec"]["containers"] if c["name"] == "server")
    cached = next((sb.workdir / "pvc").rglob(B.model_link(NAME))).resolve()
    kube.delete("llmops.dev/v1alpha1", "InferenceService", NS, NAME)
    while kube.list("v1", "Pod", NS, f"llmops.dev/owner-name={NAME}") and time.time() < deadline:
        time.sleep(0.5)
    floor = bare(cached, server["args"], 18123, deadline, workdir / "bare.log")
    return {"miss": miss, "hit": hit, "bare": floor}


def report(reps: list[dict[str, dict[str, float]]]) -> None:
    med = {k: {p: statistics.median(r[k][p] for r in reps) for p in reps[0][k]} for k in ("miss", "hit", "bare")}
    print(f"\nCold start on real vLLM (pod created -> first token), median of {len(reps)} run(s), seconds")
    print(f"{'phase':<28}{'miss':>10}{'hit':>10}{'bare':>10}")
    for phase, label in (("fetch", "fetch (init container)"), ("start", "start -> weights loaded"),
                         ("engine", "engine (KV cache, ready)"), ("serve", "API up -> first token"), ("total", "total")):
        print(f"{label:<28}" + "".join(f"{med[k][phase]:>10.1f}" for k in ("miss", "hit", "bare")))
    print(f"{'  vLLM: Loading weights':<28}" + "".join(f"{med[k]['vllm_load_s']:>10.2f}" for k in ("miss", "hit", "bare")))
    print(f"{'  vLLM: init engine':<28}" + "".join(f"{med[k]['vllm_engine_s']:>10.2f}" for k in ("miss", "hit", "bare")))
    print(f"\nratios (same run): miss/bare {med['miss']['total'] / med['bare']['total']:.2f}, "
          f"hit/bare {med['hit']['total'] / med['bare']['total']:.2f}, hit/miss {med['hit']['total'] / med['miss']['total']:.2f}; "
          f"second replica's fetch was a cache hit: {all(r['hit']['cache_hit'] for r in reps)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per repetition")
    ap.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    a = ap.parse_args()
    import boto3
    from llmops.kube.client import Kube, load_api_client
    from llmops.sandbox.run import DEFAULT_BUCKET, Sandbox
    from llmops_runtime.serve import manifest as M

    work = Path(a.dir or tempfile.mkdtemp(prefix="bench-cold-"))
    model = build(work)
    entries = M.build(model, exclude=frozenset({M.DEFAULT_NAME}))
    manifest = M.render(entries)
    reps = []
    for i in range(a.reps):
        with Sandbox(nodes=1, workdir=work / f"sbx-{i}", operator=True, serving="vllm") as sb:
            s3 = boto3.client("s3", endpoint_url=sb.s3_endpoint, aws_access_key_id=sb.s3_env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=sb.s3_env["AWS_SECRET_ACCESS_KEY"], region_name=sb.s3_env["AWS_REGION"])
            for rel in entries:
                s3.upload_file(str(model / rel), DEFAULT_BUCKET, f"models/bench/{rel}")
            s3.put_object(Bucket=DEFAULT_BUCKET, Key=f"models/bench/{M.DEFAULT_NAME}", Body=manifest)
            reps.append(one_rep(sb, Kube(load_api_client(sb.kubeconfig)), M.digest(manifest), a.timeout, work))
        print(json.dumps(reps[-1]), flush=True)
    report(reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
