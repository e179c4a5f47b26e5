"""The operator's side of the adapter-agent protocol (``llmops_runtime.serve.adapters``).

The wanted set is pushed into every replica whose server is up: vLLM's ``/v1/models`` says
what a replica has (and from which path); the pod's agent is asked to unload what is not
wanted (``POST /adapters/unload``), then to fetch-and-load what is missing (``POST
/adapters``; it answers at once, a later reconcile sees the result). A replica not Ready yet
is then told the full list (``POST /adapters/sync``): its agent's startup gate opens once
those loads settle, so a new replica never takes traffic for an adapter it does not serve.
"""

from __future__ import annotations

import json
import urllib.error
from pathlib import PurePosixPath

from llmops.api.inference import InferenceService, LoraMode
from llmops.builders import inference as B
from llmops.plan import inference as S
from llmops.serving.podhttp import call


def post_agent(ip: str, path: str, body: dict) -> tuple[int, dict]:
    """(HTTP status, JSON body) of a call to a pod's adapter agent; HTTP errors are answers too."""
    try:
        return 200, json.loads(call(f"{B.adapter_agent_url(ip)}{path}", body) or "{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read().decode(errors="replace") or "{}")
        except ValueError:
            return exc.code, {"message": str(exc)}


def sync_adapters(svc: InferenceService, pods: list[S.PodView], wanted: tuple[S.WantedAdapter, ...]) -> dict[str, S.AdapterState]:
    """Make every serving replica hold exactly the admitted wanted adapters; their state on the
    ready ones (status speaks of the replicas in the Service). A replica whose server is up but
    which is not Ready yet (its adapter agent gates it until the adapters are in) gets them too."""
    want = {w.name: w for w in wanted if w.admitted and w.uri}
    if not wanted and svc.spec.engine.lora != LoraMode.ENABLED:
        return {}  # LoRA off: no agent, nothing to load
    serving = sorted((p for p in pods if (p.ready or p.server_ready) and p.ip and not p.deleting), key=lambda p: p.name)
    loaded = dict.fromkeys(want, 0)
    failed: dict[str, str] = {}
    loading: dict[str, str] = {}
    asked = 0
    for p in serving:
        states = push_adapters(p, want, svc.metadata.name)
        if not p.ready:
            continue
        asked += 1
        for n, (state, why) in states.items():
            if state == "loaded":
                loaded[n] += 1
            elif state == "failed":
                failed.setdefault(n, why)
            else:
                loading.setdefault(n, why)
    return {n: S.AdapterState(replicas=asked, loaded=loaded[n], failed=failed.get(n, ""), loading=loading.get(n, "")) for n in want}


def push_adapters(p: S.PodView, want: dict[str, S.WantedAdapter], service: str) -> dict[str, tuple[str, str]]:
    """Bring one replica to hold exactly ``want``: vLLM's ``/v1/models`` says what it has, its
    agent unloads the rest and fetches-and-loads what is missing. Per adapter: (``loaded`` |
    ``loading`` | ``failed``, why). A replica not Ready yet is then told the full list: the
    agent's startup gate opens once those loads settle."""
    try:
        models = json.loads(call(f"http://{p.ip}:{B.PORT}/v1/models")).get("data") or []
    except (OSError, ValueError) as exc:
        return {n: ("loading", f"pod {p.name}: /v1/models: {exc}") for n in want}
    served = {str(m.get("id")): str(m.get("root") or "") for m in models if m.get("parent")}
    # By cache entry name: in a sandbox pod vLLM reports the path under the pod root.
    out = {n: ("loaded", "") for n, w in want.items() if PurePosixPath(served.get(n) or "/").name == PurePosixPath(w.path(service)).name}
    try:
        for extra in sorted(set(served) - set(want)):  # unload first: the limit counts them
            post_agent(p.ip, "/adapters/unload", {"name": extra})
        for n, w in want.items():
            if n in out:
                continue
            body = {"name": n, "uri": w.uri, "path": w.path(service)}
            if w.manifest_sha256:
                body["manifestSha256"] = w.manifest_sha256
            code, rec = post_agent(p.ip, "/adapters", body)
            if rec.get("state") == "failed" or code >= 400:
                why = f"{rec.get('reason')}: {rec.get('message')}" if rec.get("reason") else str(rec.get("message") or f"HTTP {code}")
                out[n] = ("failed", f"pod {p.name}: {why}")
            else:
                out[n] = ("loading", f"loading on pod {p.name}")
        if not p.ready:
            post_agent(p.ip, "/adapters/sync", {"names": sorted(want)})
    except OSError as exc:  # the agent is not up yet (or gone): try again next time
        for n in want:
            out.setdefault(n, ("loading", f"pod {p.name}: adapter agent: {exc}"))
    return out
