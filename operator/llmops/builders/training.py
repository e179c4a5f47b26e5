"""TrainingJob -> its child objects, as plain dicts ready for server-side apply.

Pure and deterministic: the same job, attempt, backend and checkpoint always give the same
objects (dict keys sorted where order is free), and nothing here reads the cluster, the
clock or randomness. The children of one job:

* a headless Service ``<job>-workers`` (``publishNotReadyAddresses`` so rank 0's DNS name
  resolves before any readiness, which rendezvous needs);
* one worker pod per node, ``<job>-w<rank>-a<attempt>``: hostname = pod name, subdomain =
  the Service, so ``MASTER_ADDR`` is rank 0's stable DNS name. The attempt is in the name so
  a new attempt's pod can never be confused with a terminating pod of the previous one;
* a progress Lease ``<job>-progress`` plus a Role allowing get/update/patch on that Lease
  only (``resourceNames``) and a RoleBinding to the pods' ServiceAccount; a dedicated
  ServiceAccount ``<job>-worker`` when the user names none, so no other pod in the
  namespace gains the right;
* the gang object of the chosen backend, one per attempt.

Every object carries the owner labels and a controller ownerReference to the job's uid, and
lives in the job's namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmops.api import labels as L
from llmops.api import runtime_env as E
from llmops.api.scheduling import GangBackend
from llmops.api.training import KIND, TrainingJob
from llmops.builders import ownership
from llmops.builders.names import bounded_name
from llmops.scheduling import Gang, backend_for

CONTAINER = "trainer"  # name of the one container in every worker pod
MASTER_PORT = 29500  # c10d store port on rank 0 (torchrun's default)
TERMINATION_GRACE_SECONDS = 120  # time for the runtime's final checkpoint after SIGTERM
DSHM_VOLUME = "dshm"  # the in-memory /dev/shm volume (users may mount it by this name)
CHECKPOINT_VOLUME = "llmops-checkpoint"  # the PVC volume for pvc:// checkpoint URIs
PVC_ROOT = "/mnt/pvc"  # pvc://claim/path is mounted at PVC_ROOT/claim (the runtime's default)
MULTUS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"  # Multus reads: secondary networks of the pod
S3_SECRET_KEYS = (  # (env name, Secret key, optional)
    ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID", False),
    ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", False),
    ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL", True),
)
WORKER_ROLE = "worker"

#: (apiVersion, kind) of every child kind a TrainingJob may own: what the reconcile lists
#: and prunes. Gang kinds are listed only when the cluster serves them.
CHILD_KINDS = (
    ("v1", "Pod"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("coordination.k8s.io/v1", "Lease"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
)
GANG_KINDS = (
    ("scheduling.k8s.io/v1alpha2", "PodGroup"),
    ("scheduling.volcano.sh/v1beta1", "PodGroup"),
    ("scheduling.x-k8s.io/v1alpha1", "PodGroup"),
)


# --- names -------------------------------------------------------------------------------------


def service_name(job_name: str) -> str:
    return bounded_name(job_name, "-workers")


def pod_name(job_name: str, rank: int, attempt: int) -> str:
    return bounded_name(job_name, f"-w{rank}-a{attempt}")


def lease_name(job_name: str) -> str:
    return bounded_name(job_name, "-progress")


def service_account_name(job_name: str) -> str:
    return bounded_name(job_name, "-worker")


def gang_name(job_name: str, attempt: int) -> str:
    return bounded_name(job_name, f"-a{attempt}")


def rank0_address(job_name: str, namespace: str, attempt: int) -> str:
    """MASTER_ADDR: rank 0's DNS name through the headless Service (no cluster domain assumed)."""
    return f"{pod_name(job_name, 0, attempt)}.{service_name(job_name)}.{namespace}.svc"


# --- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildInputs:
    """Observed facts the builder needs besides the job (decided by the plan, not here)."""

    attempt: int = 0
    backend: GangBackend = GangBackend.NONE  # resolved; never auto
    resume_from: str | None = None  # id of the committed checkpoint the operator observed
    include_workers: bool = True  # False while suspended/finished/backing off: no pods, keep the rest


def owner_reference(job: TrainingJob) -> dict[str, Any]:
    return ownership.owner_reference(KIND, job.metadata)


def owner_labels(job: TrainingJob) -> dict[str, str]:
    return ownership.owner_labels(KIND, job.metadata.name)


def _meta(job: TrainingJob, name: str, extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": job.metadata.namespace or "default",
        "labels": dict(sorted({**owner_labels(job), **(extra_labels or {})}.items())),
        "ownerReferences": [owner_reference(job)],
    }


def pods_service_account(job: TrainingJob) -> tuple[str, bool]:
    """(ServiceAccount the pods run as, whether the operator creates it).

    The pod template's account wins (the user shaped the pods); then the checkpoint
    credentials' workload-identity account; else a dedicated one per job."""
    spec = job.spec
    if spec.template.service_account_name:
        return spec.template.service_account_name, False
    creds = spec.checkpoint.credentials if spec.checkpoint else None
    if creds and creds.service_account_name:
        return creds.service_account_name, False
    return service_account_name(job.metadata.name), True


def per_pod_requests(job: TrainingJob) -> dict[str, str]:
    """Resources one worker pod requests (requests == limits), sorted by name."""
    out = job.spec.resources.quantities()
    rdma = job.spec.network.rdma
    if rdma:
        for dev in rdma.resources:
            out[dev.name] = str(dev.count)
    return dict(sorted(out.items()))


def gang_of(job: TrainingJob, attempt: int) -> Gang:
    """The backend-neutral description of this attempt's gang."""
    sched = job.spec.scheduling
    return Gang(
        name=gang_name(job.metadata.name, attempt),
        namespace=job.metadata.namespace or "default",
        size=job.spec.nodes,
        min_count=job.spec.nodes,
        per_pod_requests=per_pod_requests(job),
        queue_name=sched.queue_name,
        priority_class_name=sched.priority_class_name,
        labels=owner_labels(job),
        owner_references=(owner_reference(job),),
    )


# --- objects -----------------------------------------------------------------------------------


def build_service(job: TrainingJob) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(job, service_name(job.metadata.name)),
        "spec": {
            "clusterIP": "None",
            "ports": [{"name": "rendezvous", "port": MASTER_PORT, "protocol": "TCP", "targetPort": MASTER_PORT}],
            "publishNotReadyAddresses": True,
            "selector": {L.JOB_NAME: job.metadata.name, L.ROLE: WORKER_ROLE},
        },
    }


def build_progress_objects(job: TrainingJob) -> list[dict[str, Any]]:
    """Lease + least-privilege Role/RoleBinding (+ the ServiceAccount when we own it)."""
    name = job.metadata.name
    ns = job.metadata.namespace or "default"
    lease = lease_name(name)
    sa, create_sa = pods_service_account(job)
    out: list[dict[str, Any]] = [
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": _meta(job, lease), "spec": {}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(job, lease),
            "rules": [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resourceNames": [lease],
                    "resources": ["leases"],
                    "verbs": ["get", "patch", "update"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(job, lease),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": lease},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        },
    ]
    if create_sa:
        out.insert(0, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(job, sa), "automountServiceAccountToken": True})
    return out


def _env(name: str, value: str | int) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def worker_env(job: TrainingJob, rank: int, inputs: BuildInputs) -> list[dict[str, Any]]:
    """The runtime contract's variables, then NCCL hints, storage credentials and user env."""
    spec = job.spec
    name = job.metadata.name
    ns = job.metadata.namespace or "default"
    env: list[dict[str, Any]] = [
        _env(E.MASTER_ADDR, rank0_address(name, ns, inputs.attempt)),
        _env(E.MASTER_PORT, MASTER_PORT),
        _env(E.NNODES, spec.nodes),
        _env(E.NODE_RANK, rank),
        _env(E.NPROC_PER_NODE, spec.effective_procs_per_node()),
        _env(E.LAUNCHER, spec.launcher.value),
        _env(E.JOB_NAME, name),
        _env(E.NAMESPACE, ns),
        _env(E.RUN_ID, job.metadata.uid or ""),
        _env(E.ATTEMPT, inputs.attempt),
        {"name": E.POD_NAME, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
        _env(E.PROGRESS_LEASE, lease_name(name)),
        _env(E.TOTAL_STEPS, spec.total_steps or 0),
    ]
    stage = spec.zero_stage()
    if stage is not None:
        env.append(_env(E.DEEPSPEED_ZERO_STAGE, int(stage)))
    finetune_spec = job.metadata.annotations.get(L.FINETUNE_SPEC_ANNOTATION)
    if finetune_spec:  # a FinetuneJob's child: the runtime's parameters (reserved name, so not via template.env)
        env.append(_env(E.FINETUNE_SPEC, finetune_spec))
    ck = spec.checkpoint
    if ck:
        env += [
            _env(E.CHECKPOINT_URI, ck.uri),
            _env(E.CHECKPOINT_EVERY_STEPS, ck.every_steps or 0),
            _env(E.CHECKPOINT_EVERY_SECONDS, ck.every_seconds or 0),
            _env(E.CHECKPOINT_KEEP, ck.keep_last),
            _env(E.RESUME_POLICY, ck.resume_policy.value),
        ]
        if ck.max_age_seconds is not None:
            env.append(_env(E.CHECKPOINT_MAX_AGE_SECONDS, ck.max_age_seconds))
        if ck.uri.startswith("pvc://"):
            env.append(_env(E.PVC_ROOT, PVC_ROOT))
        if inputs.resume_from:
            env.append(_env(E.RESUME_FROM, inputs.resume_from))
    user_names = {e.name for e in spec.template.env}
    rdma = spec.network.rdma
    if rdma:
        for var, value in (("NCCL_IB_HCA", rdma.nccl_ib_hca), ("NCCL_SOCKET_IFNAME", rdma.nccl_socket_ifname)):
            if value and var not in user_names:  # an explicit user value wins over the shorthand
                env.append(_env(var, value))
    if ck and ck.uri.startswith("s3://") and ck.credentials and ck.credentials.secret_name:
        for var, key, optional in S3_SECRET_KEYS:
            if var in user_names:
                continue
            ref: dict[str, Any] = {"key": key, "name": ck.credentials.secret_name}
            if optional:
                ref["optional"] = True
            env.append({"name": var, "valueFrom": {"secretKeyRef": ref}})
    env += [e.wire() for e in spec.template.env]
    return env


def _volumes(job: TrainingJob) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    spec = job.spec
    dshm: dict[str, Any] = {"medium": "Memory"}
    if spec.resources.shared_memory:
        dshm["sizeLimit"] = spec.resources.shared_memory
    volumes: list[dict[str, Any]] = [{"name": DSHM_VOLUME, "emptyDir": dshm}]
    mounts: list[dict[str, Any]] = [{"mountPath": "/dev/shm", "name": DSHM_VOLUME}]
    ck = spec.checkpoint
    if ck and ck.uri.startswith("pvc://"):
        claim = ck.uri[len("pvc://") :].split("/", 1)[0]
        volumes.append({"name": CHECKPOINT_VOLUME, "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"mountPath": f"{PVC_ROOT}/{claim}", "name": CHECKPOINT_VOLUME})
    volumes += [v.wire() for v in spec.template.volumes]
    mounts += [m.wire() for m in spec.template.volume_mounts if m.mount_path != "/dev/shm"]
    return volumes, mounts


def build_worker_pod(job: TrainingJob, rank: int, inputs: BuildInputs) -> dict[str, Any]:
    spec = job.spec
    tmpl = spec.template
    name = job.metadata.name
    backend = backend_for(inputs.backend)
    patch = backend.pod_patch(gang_of(job, inputs.attempt))
    pname = pod_name(name, rank, inputs.attempt)

    pod_labels = {
        **tmpl.labels,
        **patch.labels,
        **owner_labels(job),
        L.JOB_NAME: name,
        L.ATTEMPT: str(inputs.attempt),
        L.NODE_RANK: str(rank),
        L.ROLE: WORKER_ROLE,
    }
    annotations = {**tmpl.annotations, **patch.annotations}
    rdma = spec.network.rdma
    if rdma and rdma.networks:
        annotations[MULTUS_ANNOTATION] = ",".join(rdma.networks)

    requests = per_pod_requests(job)
    volumes, mounts = _volumes(job)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "command": ["python", "-m", "llmops_runtime.launch", "--", *spec.command, *spec.args],
        "env": worker_env(job, rank, inputs),
        "ports": [{"containerPort": MASTER_PORT, "name": "rendezvous", "protocol": "TCP"}],
        "resources": {"limits": dict(requests), "requests": dict(requests)} if requests else {},
        "terminationMessagePolicy": "FallbackToLogsOnError",  # the runtime's last stderr line names the cause
        "volumeMounts": mounts,
    }
    if tmpl.env_from:
        container["envFrom"] = [e.wire() for e in tmpl.env_from]
    if rdma and rdma.resources:
        # Registering memory for RDMA needs mlock beyond the default limit; only where asked.
        container["securityContext"] = {"capabilities": {"add": ["IPC_LOCK"]}}

    sa, _ = pods_service_account(job)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": True,  # rank 0 renews the progress Lease
        "containers": [container],
        "enableServiceLinks": False,  # no Service env vars colliding with the rendezvous contract
        "hostname": pname,
        "restartPolicy": "Never",  # restarts are the operator's (whole gang, from a checkpoint)
        "serviceAccountName": sa,
        "subdomain": service_name(name),
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "volumes": volumes,
    }
    if tmpl.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(tmpl.node_selector.items()))
    if tmpl.tolerations:
        pod_spec["tolerations"] = [t.wire() for t in tmpl.tolerations]
    if tmpl.affinity:
        pod_spec["affinity"] = tmpl.affinity
    if spec.scheduling.priority_class_name:
        pod_spec["priorityClassName"] = spec.scheduling.priority_class_name
    if patch.scheduler_name:
        pod_spec["schedulerName"] = patch.scheduler_name
    if patch.scheduling_group:
        pod_spec["schedulingGroup"] = {"podGroupName": patch.scheduling_group}
    if patch.scheduling_gates:
        pod_spec["schedulingGates"] = [{"name": g} for g in patch.scheduling_gates]

    meta = _meta(job, pname, pod_labels)
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}


def build_training_children(job: TrainingJob, inputs: BuildInputs) -> list[dict[str, Any]]:
    """Every child the job should have for ``inputs`` (pods only when ``include_workers``)."""
    if not job.metadata.uid:
        raise ValueError("the job has no metadata.uid: children need an owner reference")
    out = [build_service(job), *build_progress_objects(job)]
    if inputs.include_workers:
        out += backend_for(inputs.backend).objects(gang_of(job, inputs.attempt))
        out += [build_worker_pod(job, rank, inputs) for rank in range(job.spec.nodes)]
    return out
