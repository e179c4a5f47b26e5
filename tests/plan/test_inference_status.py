"""InferenceService status: ModelCached from the fetch init container's termination message
(fetcher reasons naming the file), Ready/Degraded/Progressing from the Deployment and pods,
InsufficientGPUMemory from vLLM's text, load seconds from pod start -> ready, resolved model,
adapters, scale decisions; deterministic (no churn) and transition-only events."""

from __future__ import annotations

import datetime as dt

import pytest
from llmops.api import conditions as C
from llmops.api.inference import ScaleDecision, parse_inference_service
from llmops.plan import inference as S

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
UID = "00000000-0000-4000-8000-0000000000bb"
DIGEST = "ab" * 32


def svc(status=None, **spec):
    base = {"model": {"uri": "s3://models/llama"}, **spec}
    b = {"apiVersion": "llmops.dev/v1alpha1", "kind": "InferenceService",
         "metadata": {"name": "chat", "namespace": "ml", "uid": UID, "generation": 3}, "spec": base}
    if status:
        b["status"] = status
    return parse_inference_service(b)


def pod(name="chat-a", ready=False, start="2026-01-02T03:00:00Z", ready_at="2026-01-02T03:01:40Z", fetch=None, fetching=False,
        server_exit=None):
    st = {"phase": "Running" if ready else "Pending", "startTime": start, "podIP": "10.0.0.1",
          "conditions": [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": ready_at}]}
    init = {"name": "fetch-model", "state": {}}
    if fetch is not None:
        init["state"] = {"terminated": {"exitCode": fetch[0], "message": fetch[1]}}
    elif fetching:
        init["state"] = {"running": {}}
    st["initContainerStatuses"] = [init]
    if server_exit:
        st["containerStatuses"] = [{"name": "server", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                    "lastState": {"terminated": {"exitCode": server_exit[0], "message": server_exit[1]}}}]
    return S.PodView.from_pod({"metadata": {"name": name}, "status": st})


OK_FETCH = (0, f"ModelVerified: digest=sha256:{DIGEST} bytes=10 files=2 seconds=0.1 cache=miss key=k path=/p")


def dep(replicas=1, ready=1, updated=1, gen=1, observed=1):
    return {"metadata": {"generation": gen},
            "status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated, "observedGeneration": observed}}


def cond(status, t):
    return C.find_condition(status.conditions, t)


def test_ready_service():
    st = S.compute_status(svc(), S.Observed(deployment=dep(), pods=(pod(ready=True, fetch=OK_FETCH),), desired_replicas=1), NOW)
    assert (cond(st, C.READY).status.value, cond(st, C.READY).reason) == ("True", C.REPLICAS_READY)
    assert (cond(st, C.MODEL_CACHED).status.value, cond(st, C.MODEL_CACHED).reason) == ("True", C.MODEL_VERIFIED)
    assert cond(st, C.DEGRADED).status.value == "False" and cond(st, C.PROGRESSING).status.value == "False"
    assert [c.type for c in st.conditions] == list(C.SERVING_TYPES)
    assert (cond(st, C.ADAPTERS_READY).status.value, cond(st, C.ADAPTERS_READY).reason) == ("True", C.NO_ADAPTERS)
    assert st.url == "http://chat.ml.svc:8000/v1" and st.replicas == 1 and st.ready_replicas == 1 and st.desired_replicas == 1
    assert st.selector == "llmops.dev/owner-kind=InferenceService,llmops.dev/owner-name=chat,llmops.dev/role=server"
    assert st.model.uri == "s3://models/llama" and st.model.digest == f"sha256:{DIGEST}"
    assert st.load_seconds.last == 100.0 and st.observed_generation == 3


@pytest.mark.parametrize(
    ("message", "reason", "names"),
    [
        ("PickleNotAllowed: pytorch_model.bin: only pickle weights; set allowPickle", "PickleNotAllowed", "pytorch_model.bin"),
        ("ModelDigestMismatch: model-00001.safetensors: sha256 aa != expected bb", "ModelDigestMismatch", "model-00001.safetensors"),
        ("ModelNotFound: no such prefix s3://models/llama", "ModelNotFound", "s3://models/llama"),
        ("Traceback: something odd", "ModelFetchFailed", "something odd"),
    ],
)
def test_fetch_failure_names_cause(message, reason, names):
    st = S.compute_status(svc(), S.Observed(deployment=dep(ready=0), pods=(pod(fetch=(83, message)),), desired_replicas=1), NOW)
    mc, dg = cond(st, C.MODEL_CACHED), cond(st, C.DEGRADED)
    assert (mc.status.value, mc.reason) == ("False", reason) and names in mc.message
    assert (dg.status.value, dg.reason) == ("True", reason) and names in dg.message
    assert cond(st, C.READY).status.value == "False"


def test_fetching_is_not_degraded():
    st = S.compute_status(svc(), S.Observed(deployment=dep(ready=0), pods=(pod(fetching=True),), desired_replicas=1), NOW)
    assert cond(st, C.MODEL_CACHED).reason == C.MODEL_FETCHING and cond(st, C.DEGRADED).status.value == "False"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", S.INSUFFICIENT_GPU_MEMORY),
        ("ValueError: The model's max seq len (32768) is larger than the maximum number of tokens that can be stored in KV cache (1024).",
         S.INSUFFICIENT_GPU_MEMORY),
        ("RuntimeError: Cannot find any model weights", S.SERVER_FAILED),
    ],
)
def test_server_failure_classified(text, reason):
    p = pod(fetch=OK_FETCH, server_exit=(1, text))
    st = S.compute_status(svc(), S.Observed(deployment=dep(ready=0), pods=(p,), desired_replicas=1), NOW)
    dg = cond(st, C.DEGRADED)
    assert (dg.status.value, dg.reason) == ("True", reason) and "chat-a" in dg.message


def test_progressing_rollout_and_scaling():
    st = S.compute_status(svc(maxReplicas=3), S.Observed(deployment=dep(replicas=2, ready=1, updated=1), pods=(), desired_replicas=2), NOW)
    assert cond(st, C.PROGRESSING).reason == C.ROLLOUT_IN_PROGRESS
    st = S.compute_status(svc(maxReplicas=3), S.Observed(deployment=dep(gen=2, observed=1), pods=(), desired_replicas=1), NOW)
    assert cond(st, C.PROGRESSING).reason == C.ROLLOUT_IN_PROGRESS
    d = ScaleDecision(time="2026-01-02T03:04:05Z", **{"from": 1}, to=2, signal="queue", value=9.0, reason="ScaleUp")
    st = S.compute_status(svc(maxReplicas=3), S.Observed(deployment=dep(), pods=(), desired_replicas=2, decision=d), NOW)
    assert cond(st, C.PROGRESSING).reason == C.SCALING_UP and st.last_scale_decision == d
    # a later reconcile without a new decision keeps the last one
    st2 = S.compute_status(svc(status=st.wire(), maxReplicas=3),
                           S.Observed(deployment=dep(replicas=2, ready=2, updated=2), pods=(), desired_replicas=2), NOW)
    assert st2.last_scale_decision == d and cond(st2, C.PROGRESSING).status.value == "False"


def test_scaled_to_zero():
    auto = {"scaleToZero": {"enabled": True}}
    st = S.compute_status(svc(minReplicas=0, autoscaling=auto),
                          S.Observed(deployment=dep(replicas=0, ready=0, updated=0), desired_replicas=0), NOW)
    assert cond(st, C.READY).reason == C.SCALED_TO_ZERO and cond(st, C.DEGRADED).status.value == "False"


def test_ready_with_fewer_than_desired_above_min():
    st = S.compute_status(svc(maxReplicas=4), S.Observed(deployment=dep(replicas=4, ready=2, updated=4), desired_replicas=4), NOW)
    assert cond(st, C.READY).status.value == "True"  # min 1 is met
    assert cond(st, C.DEGRADED).status.value == "False"  # nothing failed: replicas are loading
    assert cond(st, C.DEGRADED).reason == C.REPLICAS_LOADING and "2/4 replicas ready" in cond(st, C.DEGRADED).message


def test_load_seconds_last_and_p95():
    pods = tuple(pod(name=f"p{i}", ready=True, ready_at=f"2026-01-02T03:0{i}:00Z", fetch=OK_FETCH) for i in range(1, 5))
    ls = S.load_seconds(pods, None)
    assert ls.last == 240.0 and ls.p95 == 240.0
    ls2 = S.load_seconds(pods[:1], ls)  # previous p95 remembered as one sample
    assert ls2.last == 60.0 and ls2.p95 == 240.0
    assert S.load_seconds((pod(),), ls) == ls  # none ready: keep


def ftj(name, service=None, uri=None, succeeded=True, adapter=None, sha=None):
    spec = {"serve": {"inferenceServiceName": service, **({"adapterName": adapter} if adapter else {})}} if service else {}
    status = {"conditions": [{"type": "Succeeded", "status": "True" if succeeded else "False"}]}
    if uri:
        status["output"] = {"uri": uri, **({"manifestSha256": sha} if sha else {})}
    return {"metadata": {"name": name, "namespace": "ml"}, "spec": spec, "status": status}


def test_wanted_adapters_merge_spec_and_finetune_jobs():
    s = svc(adapters=[{"name": "sql", "uri": "s3://ad/sql"}, {"name": "ft", "fromFinetuneJob": "tune"},
                      {"name": "later", "fromFinetuneJob": "running"}, {"name": "gone", "fromFinetuneJob": "nope"}],
            engine={"maxLoras": 5})
    jobs = [ftj("tune", uri="s3://out/tune", sha="e" * 64), ftj("running", succeeded=False, uri="s3://out/partial"),
            ftj("legal-v2", "chat", uri="s3://out/legal", adapter="legal"), ftj("other", "other-svc", uri="s3://out/o"),
            ftj("sql-again", "chat", uri="s3://out/sql2", adapter="sql")]  # spec wins the name
    w = S.wanted_adapters(s, jobs)
    assert [(a.name, a.uri, a.finetune_job, a.admitted) for a in w] == [
        ("sql", "s3://ad/sql", None, True), ("ft", "s3://out/tune", "tune", True), ("later", None, "running", True),
        ("gone", None, "nope", True), ("legal", "s3://out/legal", "legal-v2", True)]
    assert w[1].manifest_sha256 == "e" * 64 and "no published output yet" in w[2].pending and "not found" in w[3].pending
    # the per-replica limit admits the first maxLoras, in that order
    assert [a.admitted for a in S.wanted_adapters(svc(adapters=[{"name": "a", "uri": "s3://xx/a"}], engine={"maxLoras": 1}),
                                                  [ftj("j", "chat", uri="s3://out/j")])] == [True, False]


def test_adapters_status_and_condition():
    s = svc(adapters=[{"name": "sql", "uri": "s3://ad/sql"}, {"name": "ft", "fromFinetuneJob": "tune"}])
    w = S.wanted_adapters(s, [])
    st = S.compute_status(s, S.Observed(deployment=dep(), wanted=w, adapters={"sql": S.AdapterState(replicas=2, loaded=2)}), NOW)
    assert [(a.name, a.ready, a.loaded_replicas) for a in st.adapters] == [("sql", True, 2), ("ft", False, None)]
    assert "tune" in st.adapters[1].message
    ar = cond(st, C.ADAPTERS_READY)
    assert (ar.status.value, ar.reason) == ("False", C.ADAPTERS_LOADING) and "ft: FinetuneJob tune" in ar.message
    # all loaded
    s1 = svc(adapters=[{"name": "sql", "uri": "s3://ad/sql"}])
    st = S.compute_status(s1, S.Observed(deployment=dep(), wanted=S.wanted_adapters(s1), adapters={"sql": S.AdapterState(2, 2)}), NOW)
    assert (cond(st, C.ADAPTERS_READY).status.value, cond(st, C.ADAPTERS_READY).reason) == ("True", C.ADAPTERS_LOADED)
    assert st.adapters[0].uri == "s3://ad/sql"
    # one replica failed: the fetcher's reason and the file
    bad = S.AdapterState(2, 1, failed="pod chat-b: ModelDigestMismatch: adapter_model.safetensors: sha256 aa != expected bb")
    st = S.compute_status(s1, S.Observed(deployment=dep(), wanted=S.wanted_adapters(s1), adapters={"sql": bad}), NOW)
    ar = cond(st, C.ADAPTERS_READY)
    assert (ar.status.value, ar.reason) == ("False", C.ADAPTER_NOT_READY) and "adapter_model.safetensors" in ar.message
    assert not st.adapters[0].ready and st.adapters[0].loaded_replicas == 1
    # no adapters at all
    assert cond(S.compute_status(svc(), S.Observed(deployment=dep()), NOW), C.ADAPTERS_READY).reason == C.NO_ADAPTERS


def test_adapter_limit_is_a_clear_condition():
    s = svc(adapters=[{"name": n, "uri": f"s3://ad/{n}"} for n in ("a", "b", "c")], engine={"maxLoras": 2})
    w = S.wanted_adapters(s)
    p = S.plan(s, S.Observed(deployment=dep(), wanted=w, adapters={"a": S.AdapterState(1, 1), "b": S.AdapterState(1, 1)}), NOW)
    ar = cond(p.status, C.ADAPTERS_READY)
    assert (ar.status.value, ar.reason) == ("False", C.ADAPTER_LIMIT_EXCEEDED)
    assert "engine.maxLoras allows 2 per replica" in ar.message and ar.message.endswith("not loaded: c")
    assert [(a.name, a.ready) for a in p.status.adapters] == [("a", True), ("b", True), ("c", False)]
    assert "maxLoras" in p.status.adapters[2].message
    assert any(e.type == "Warning" and e.reason == C.ADAPTER_LIMIT_EXCEEDED for e in p.events)


def test_adapters_loading_requeues_soon():
    s = svc(adapters=[{"name": "a", "uri": "s3://ad/a"}])
    loading = {"a": S.AdapterState(1, 0, loading="loading on pod x")}
    p = S.plan(s, S.Observed(deployment=dep(), wanted=S.wanted_adapters(s), adapters=loading), NOW)
    assert p.requeue_after == S.ADAPTER_REQUEUE_SECONDS and p.status.adapters[0].message == "loading on pod x"
    p = S.plan(s, S.Observed(deployment=dep(), wanted=S.wanted_adapters(s), adapters={"a": S.AdapterState(1, 1)}), NOW)
    assert p.requeue_after == S.REQUEUE_SECONDS


def test_failing_new_revision_degrades_while_the_old_pod_serves():
    """maxSurge rollout: the old pod is ready (ready == desired) but the new one fails: Degraded
    quotes vLLM's line, and the autoscaler is told not to add replicas."""
    text = ("INFO starting\n"
            "ValueError: The model's max seq len (4096) is larger than the maximum number of tokens that can be stored in KV cache (1024)."
            "\nINFO shutting down")
    old, new = pod(name="chat-old", ready=True, fetch=OK_FETCH), pod(name="chat-new", fetch=OK_FETCH, server_exit=(1, text))
    st = S.compute_status(svc(), S.Observed(deployment=dep(replicas=2, ready=1, updated=1), pods=(old, new), desired_replicas=1), NOW)
    dg = cond(st, C.DEGRADED)
    assert (dg.status.value, dg.reason) == ("True", S.INSUFFICIENT_GPU_MEMORY)
    assert dg.message.startswith("pod chat-new: ValueError: The model's max seq len (4096)")
    assert cond(st, C.READY).status.value == "True"
    assert S.scale_up_blocked((old, new)) == "server pod(s) failing: chat-new"
    assert S.scale_up_blocked((old, pod(name="loading", fetching=True))) is None


def test_no_churn_and_transition_events():
    obs = S.Observed(deployment=dep(ready=0), pods=(pod(fetching=True),), desired_replicas=1)
    p1 = S.plan(svc(), obs, NOW)
    assert {e.reason for e in p1.events} >= {C.MODEL_FETCHING, C.REPLICAS_UNAVAILABLE}
    later = NOW + dt.timedelta(seconds=30)
    p2 = S.plan(svc(status=p1.status.wire()), obs, later)
    assert p2.status.wire() == p1.status.wire() and p2.events == ()
    assert p2.desired == p1.desired
    obs3 = S.Observed(deployment=dep(), pods=(pod(ready=True, fetch=OK_FETCH),), desired_replicas=1)
    p3 = S.plan(svc(status=p2.status.wire()), obs3, later)
    assert {e.reason for e in p3.events} == {C.MODEL_VERIFIED, C.REPLICAS_READY}
    assert cond(p3.status, C.READY).last_transition_time == "2026-01-02T03:04:35Z"
    # the model stays cached when its pods are replaced (no flapping back to fetching)
    p4 = S.plan(svc(status=p3.status.wire()),
                S.Observed(deployment=dep(ready=0), pods=(pod(name="chat-b", fetching=True),), desired_replicas=1), later)
    assert cond(p4.status, C.MODEL_CACHED).status.value == "True"


def test_plan_puts_desired_replicas_on_deployment():
    p = S.plan(svc(maxReplicas=5), S.Observed(desired_replicas=3), NOW)
    assert next(o for o in p.desired if o["kind"] == "Deployment")["spec"]["replicas"] == 3


SA_REFUSED = 'pods "chat-server-1" is forbidden: error looking up service account ml/srv: serviceaccount "srv" not found'


def test_a_refused_child_degrades_the_service_with_its_reason_and_one_event():
    from llmops.failures import QUOTA_EXCEEDED, SERVICE_ACCOUNT_MISSING, classify_refusal

    quota = classify_refusal(403, 'persistentvolumeclaims "chat-cache" is forbidden: exceeded quota: q',
                             "PersistentVolumeClaim", "chat-cache")
    first = S.plan(svc(), S.Observed(deployment=None, desired_replicas=1, refusal=quota), NOW)
    ready, degraded = cond(first.status, C.READY), cond(first.status, C.DEGRADED)
    assert (ready.status.value, ready.reason, degraded.status.value, degraded.reason) == ("False", QUOTA_EXCEEDED, "True", QUOTA_EXCEEDED)
    assert "exceeded quota: q" in degraded.message
    assert [(e.type, e.reason) for e in first.events].count(("Warning", QUOTA_EXCEEDED)) == 1  # Ready and Degraded flipped: one Event
    again = S.plan(svc(status=first.status.model_dump(by_alias=True, mode="json", exclude_none=True)),
                   S.Observed(deployment=None, desired_replicas=1, refusal=quota), NOW)
    assert again.status == first.status and again.events == ()
    # The ReplicaSet controller's refusal of the server pods arrives through the Deployment.
    d = dep(replicas=0, ready=0, updated=0)
    d["metadata"]["name"] = "chat-server"
    d["status"]["conditions"] = [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": SA_REFUSED}]
    st = S.compute_status(svc(), S.Observed(deployment=d, desired_replicas=1), NOW)
    assert cond(st, C.DEGRADED).reason == SERVICE_ACCOUNT_MISSING and cond(st, C.READY).reason == SERVICE_ACCOUNT_MISSING
    assert SA_REFUSED in cond(st, C.READY).message
