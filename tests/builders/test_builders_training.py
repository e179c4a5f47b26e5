"""TrainingJob builders: names, owner references, rendezvous env, resources, RDMA, volumes,
credentials, progress Lease RBAC, gang pod patches, and determinism."""

from __future__ import annotations

import copy

import pytest
from cr_factories import EXAMPLE_UID, example_job, make_training_job
from llmops.api import labels as L
from llmops.api import runtime_env as E
from llmops.api.scheduling import GangBackend
from llmops.builders import BuildInputs, bounded_name, build_training_children
from llmops.builders.training import CHILD_KINDS, GANG_KINDS, pod_name


def children(job, **kw):
    return build_training_children(job, BuildInputs(**kw))


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def env_of(pod) -> dict:
    out = {}
    for e in pod["spec"]["containers"][0]["env"]:
        out[e["name"]] = e.get("value", e.get("valueFrom"))
    return out


def test_one_pod_per_node_with_deterministic_names_and_labels():
    job = make_training_job("t").nodes(4).gpus(8).build()
    pods = by_kind(children(job, attempt=2), "Pod")
    assert [p["metadata"]["name"] for p in pods] == ["t-w0-a2", "t-w1-a2", "t-w2-a2", "t-w3-a2"]
    for rank, p in enumerate(pods):
        lab = p["metadata"]["labels"]
        assert lab[L.ATTEMPT] == "2" and lab[L.NODE_RANK] == str(rank) and lab[L.JOB_NAME] == "t"
        assert lab[L.MANAGED_BY] == L.MANAGED_BY_VALUE
        assert p["spec"]["hostname"] == p["metadata"]["name"]
        assert p["spec"]["subdomain"] == "t-workers"
        assert p["spec"]["restartPolicy"] == "Never"


def test_every_child_is_owned_and_in_the_job_namespace():
    job = example_job().build()
    objs = children(job, backend=GangBackend.VOLCANO)
    kinds = {o["kind"] for o in objs}
    assert {"Service", "Lease", "Role", "RoleBinding", "ServiceAccount", "PodGroup", "Pod"} <= kinds
    for o in objs:
        assert o["metadata"]["namespace"] == "ml"
        (ref,) = o["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "llmops.dev/v1alpha1", "kind": "TrainingJob", "name": "llama", "uid": EXAMPLE_UID,
            "controller": True, "blockOwnerDeletion": True,
        }
        assert len(o["metadata"]["name"]) <= 63


def test_headless_service_publishes_not_ready_addresses():
    svc = by_kind(children(make_training_job("t").nodes(2).build()), "Service")[0]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {L.JOB_NAME: "t", L.ROLE: "worker"}


def test_runtime_contract_env():
    job = (
        make_training_job("t").nodes(3).gpus(4).checkpoint(uri="s3://bk/p", every_steps=50, secret="creds", maxAgeSeconds=600)
        .spec(totalSteps=1000, launcher="deepspeed").build()
    )
    pods = by_kind(children(job, attempt=1, resume_from="step-00000050"), "Pod")
    env = env_of(pods[2])
    assert env[E.MASTER_ADDR] == "t-w0-a1.t-workers.ml.svc"
    assert env[E.MASTER_PORT] == "29500"
    assert (env[E.NNODES], env[E.NODE_RANK], env[E.NPROC_PER_NODE]) == ("3", "2", "4")
    assert env[E.LAUNCHER] == "deepspeed" and env[E.DEEPSPEED_ZERO_STAGE] == "2"  # stage 2 when not given
    assert (env[E.JOB_NAME], env[E.NAMESPACE], env[E.RUN_ID], env[E.ATTEMPT]) == ("t", "ml", EXAMPLE_UID, "1")
    assert env[E.POD_NAME] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert env[E.PROGRESS_LEASE] == "t-progress" and env[E.TOTAL_STEPS] == "1000"
    assert env[E.CHECKPOINT_URI] == "s3://bk/p" and env[E.CHECKPOINT_EVERY_STEPS] == "50"
    assert env[E.CHECKPOINT_KEEP] == "3" and env[E.CHECKPOINT_MAX_AGE_SECONDS] == "600"
    assert env[E.RESUME_FROM] == "step-00000050"
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "creds", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_ENDPOINT_URL"]["secretKeyRef"]["optional"] is True
    assert pods[2]["spec"]["containers"][0]["command"] == ["python", "-m", "llmops_runtime.launch", "--", "python", "-m", "train"]


def test_zero_stage_env_only_under_deepspeed():
    staged = make_training_job("t").spec(launcher="deepspeed", deepspeed={"zeroStage": 3}).build()
    assert env_of(by_kind(children(staged), "Pod")[0])[E.DEEPSPEED_ZERO_STAGE] == "3"
    assert E.DEEPSPEED_ZERO_STAGE not in env_of(by_kind(children(make_training_job("t").build()), "Pod")[0])


def test_no_resume_and_no_checkpoint_env_without_checkpoint():
    env = env_of(by_kind(children(make_training_job("t").build()), "Pod")[0])
    assert E.RESUME_FROM not in env and E.CHECKPOINT_URI not in env and "AWS_ACCESS_KEY_ID" not in env


def test_pvc_checkpoint_is_mounted_where_the_runtime_looks():
    pod = by_kind(children(make_training_job("t").checkpoint(uri="pvc://ckpt-claim/run1").build()), "Pod")[0]
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["llmops-checkpoint"]["persistentVolumeClaim"] == {"claimName": "ckpt-claim"}
    mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert "/mnt/pvc/ckpt-claim" in mounts
    assert env_of(pod)[E.PVC_ROOT] == "/mnt/pvc"


@pytest.mark.parametrize(
    ("rdma", "ipc_lock", "multus"),
    [(True, True, "ib-a,ib-b"), (False, False, None)],
    ids=["rdma", "no-rdma"],
)
def test_rdma_devices_multus_and_ipc_lock_only_when_asked(rdma, ipc_lock, multus):
    b = make_training_job("t").nodes(2).gpus(8)
    if rdma:
        b = b.rdma(hca="rdma/ib", count=4, networks=("ib-a", "ib-b"), ib_hca="mlx5_0", ifname="eth0")
    pod = by_kind(children(b.build()), "Pod")[0]
    c = pod["spec"]["containers"][0]
    assert ("securityContext" in c and c["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]) == ipc_lock
    assert pod["metadata"].get("annotations", {}).get("k8s.v1.cni.cncf.io/networks") == multus
    assert ("rdma/ib" in c["resources"]["limits"]) == rdma
    env = env_of(pod)
    assert (env.get("NCCL_IB_HCA"), env.get("NCCL_SOCKET_IFNAME")) == (("mlx5_0", "eth0") if rdma else (None, None))


def test_resources_requests_equal_limits_with_device_name_and_shm():
    job = make_training_job("t").gpus(8, resource="amd.com/gpu").resources(cpu="32", memory="256Gi", sharedMemory="32Gi").build()
    pod = by_kind(children(job), "Pod")[0]
    res = pod["spec"]["containers"][0]["resources"]
    assert res["limits"] == res["requests"] == {"amd.com/gpu": "8", "cpu": "32", "memory": "256Gi"}
    dshm = next(v for v in pod["spec"]["volumes"] if v["name"] == "dshm")
    assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}


def test_user_template_is_passed_through_and_cannot_override_ours():
    job = make_training_job("t").template(
        labels={"team": "nlp", L.JOB_NAME: "evil"},
        annotations={"note": "x"},
        nodeSelector={"pool": "gpu"},
        tolerations=[{"key": "gpu", "operator": "Exists"}],
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
        env=[{"name": "HF_HOME", "value": "/cache"}],
        envFrom=[{"configMapRef": {"name": "cfg"}}],
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "ds"}}],
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
        serviceAccountName="trainer-sa",
    ).priority("high").build()
    objs = children(job)
    pod = by_kind(objs, "Pod")[0]
    assert pod["metadata"]["labels"]["team"] == "nlp" and pod["metadata"]["labels"][L.JOB_NAME] == "t"
    assert pod["metadata"]["annotations"] == {"note": "x"}
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"pool": "gpu"} and spec["priorityClassName"] == "high"
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}] and "nodeAffinity" in spec["affinity"]
    assert spec["serviceAccountName"] == "trainer-sa"
    c = spec["containers"][0]
    assert env_of(pod)["HF_HOME"] == "/cache" and c["envFrom"] == [{"configMapRef": {"name": "cfg"}}]
    assert {"name": "data", "mountPath": "/data", "readOnly": False} in c["volumeMounts"]
    # the user's ServiceAccount is bound; no ServiceAccount of ours is created
    assert not by_kind(objs, "ServiceAccount")
    assert by_kind(objs, "RoleBinding")[0]["subjects"] == [{"kind": "ServiceAccount", "name": "trainer-sa", "namespace": "ml"}]


def test_progress_lease_rbac_is_least_privilege():
    objs = children(make_training_job("t").build())
    (role,) = by_kind(objs, "Role")
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["t-progress"],
         "verbs": ["get", "patch", "update"]}
    ]
    (sa,) = by_kind(objs, "ServiceAccount")
    (rb,) = by_kind(objs, "RoleBinding")
    assert rb["subjects"][0]["name"] == sa["metadata"]["name"] == by_kind(objs, "Pod")[0]["spec"]["serviceAccountName"]
    assert rb["roleRef"]["name"] == role["metadata"]["name"]


@pytest.mark.parametrize(
    ("backend", "check"),
    [
        (GangBackend.NATIVE, lambda p: p["spec"]["schedulingGroup"] == {"podGroupName": "t-a1"}),
        (GangBackend.VOLCANO,
         lambda p: p["spec"]["schedulerName"] == "volcano" and p["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == "t-a1"),
        (GangBackend.COSCHEDULING, lambda p: p["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "t-a1"),
        (GangBackend.KUEUE, lambda p: p["spec"]["schedulingGates"] == [{"name": "kueue.x-k8s.io/admission"}]
            and p["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] == "t-a1"
            and p["metadata"]["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == "2"),
        (GangBackend.NONE, lambda p: "schedulerName" not in p["spec"] and "schedulingGates" not in p["spec"]),
    ],
    ids=lambda v: v.value if isinstance(v, GangBackend) else "",
)
def test_gang_backend_pod_patch(backend, check):
    pods = by_kind(children(make_training_job("t").nodes(2).backend(backend.value).build(), attempt=1, backend=backend), "Pod")
    assert all(check(p) for p in pods)


def test_without_workers_keeps_base_objects_only():
    objs = children(make_training_job("t").nodes(2).build(), include_workers=False, backend=GangBackend.VOLCANO)
    assert {o["kind"] for o in objs} == {"Service", "ServiceAccount", "Lease", "Role", "RoleBinding"}


def test_deterministic_and_input_not_mutated():
    job = example_job().build()
    before = job.model_dump()
    a = children(job, attempt=3, backend=GangBackend.KUEUE, resume_from="step-1")
    b = children(copy.deepcopy(job), attempt=3, backend=GangBackend.KUEUE, resume_from="step-1")
    assert a == b and job.model_dump() == before


def test_auto_must_be_resolved_first():
    with pytest.raises(ValueError, match="auto"):
        children(make_training_job("t").build(), backend=GangBackend.AUTO)


@pytest.mark.parametrize(
    ("base", "suffix"),
    [("t", "-w0-a0"), ("a" * 40, "-w1023-a99999"), ("b" * 63, "-progress"), ("x-" * 40, "-w7-a3")],
)
def test_bounded_names_fit_and_are_stable(base, suffix):
    name = bounded_name(base, suffix)
    assert len(name) <= 63 and name.endswith(suffix) and name == bounded_name(base, suffix)
    assert not name.startswith("-") and "--" not in name.replace(suffix, "")[:1]
    if len(base + suffix) <= 63:
        assert name == base + suffix
    else:
        assert bounded_name(base + "z", suffix) != name  # the hash keeps truncated names apart


def test_pod_name_helper_matches_builder():
    pods = by_kind(children(make_training_job("t").nodes(2).build(), attempt=5), "Pod")
    assert [p["metadata"]["name"] for p in pods] == [pod_name("t", r, 5) for r in range(2)]


@pytest.mark.parametrize("backend", [b for b in GangBackend if b != GangBackend.AUTO], ids=lambda b: b.value)
def test_child_kinds_cover_everything_built(backend):
    objs = children(example_job().build(), backend=backend)
    assert {(o["apiVersion"], o["kind"]) for o in objs} <= set(CHILD_KINDS) | set(GANG_KINDS)
