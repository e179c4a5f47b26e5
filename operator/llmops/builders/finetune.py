"""FinetuneJob -> its child TrainingJob (and the InferenceService that ``serve.create`` asks for).

Pure and deterministic, like every builder: the same FinetuneJob always gives the same
objects, and nothing here reads the cluster, the clock or randomness.

"Parameters + fixed code + dataset = a training job": the child is an ordinary TrainingJob
``<name>-train`` (so gang scheduling, step checkpoints, whole-gang restarts, failure
classification, hang detection and progress all come from the TrainingJob machinery) whose
command is the project's fixed finetune entry, ``python -m llmops_runtime.finetune`` under
the launcher. What the FinetuneJob adds:

* **the runtime's parameters**: the FinetuneJob spec as compact camelCase JSON. It cannot go
  through ``spec.template.env`` (``LLMOPS_*`` names are reserved there, and rightly so), so
  it is the annotation ``labels.FINETUNE_SPEC_ANNOTATION`` on the TrainingJob, which the
  TrainingJob builder turns into ``LLMOPS_FINETUNE_SPEC`` on the worker pods. An annotation
  (not ``args``) also keeps the TrainingJob's immutable-while-running fields stable when a
  mutable FinetuneJob field (``serve``, ``runPolicy.suspend``, ...) is edited; new pods (the
  next attempt) see the new JSON.
* **volumes for pvc:// inputs and output**: each distinct claim named by ``baseModel.uri``,
  ``dataset.uri`` or ``output.uri`` is mounted at ``/mnt/pvc/<claim>`` (read-only unless the
  output lives on it), where the runtime resolves ``pvc://claim/path`` -- the same layout
  the TrainingJob builder uses for a pvc:// checkpoint claim, which it mounts itself (so
  that claim is skipped here).
* **the pass-through sections** (nodes, procsPerNode, resources, network, scheduling,
  checkpoint, failurePolicy, runPolicy, template) unchanged, except
  ``runPolicy.ttlSecondsAfterFinished``: the FinetuneJob applies its TTL itself by deleting
  the child TrainingJob, so the child's progress Lease (which carries the finetune results)
  lives until the FinetuneJob has read it.
* ``totalSteps`` from ``hyperparameters.maxSteps`` when set (with ``epochs`` the runtime
  computes the total and reports it).

The InferenceService for ``serve.create`` is deliberately *not* a child: no ownerReference
(deleting the FinetuneJob must not take serving down) and no owner labels (the prune never
selects it); it carries ``labels.CREATED_BY_FINETUNE_JOB`` instead and serves the base model.
The adapter reaches it through the publish contract (``llmops.plan.finetune.published_adapters``),
never through a write into the InferenceService's spec.
"""

from __future__ import annotations

import json
from typing import Any

from llmops.api import inference as I
from llmops.api import labels as L
from llmops.api import training as T
from llmops.api.finetune import KIND, FinetuneJob
from llmops.api.wire import GROUP_VERSION
from llmops.builders import ownership
from llmops.builders.names import bounded_name
from llmops.builders.training import PVC_ROOT

#: The finetune runtime image when spec.image is unset (torch, peft, transformers, llmops_runtime).
DEFAULT_TRAINER_IMAGE = "ghcr.io/llmops/llmops-trainer:0.1.0"
#: The fixed entry; the TrainingJob builder runs it under ``python -m llmops_runtime.launch --``.
ENTRY = ["python", "-m", "llmops_runtime.finetune"]
#: (apiVersion, kind) of every child kind a FinetuneJob owns: what the reconcile lists and prunes.
CHILD_KINDS = ((GROUP_VERSION, T.KIND),)
PVC_VOLUME_PREFIX = "llmops-pvc-"  # + claim: the volumes this builder adds to the pod template


def training_job_name(name: str) -> str:
    """The child TrainingJob: ``<name>-train`` (fits TrainingJob's name bound; see api.finetune.NAME_MAX)."""
    return bounded_name(name, "-train", limit=T.NAME_MAX)


def adapter_name(job: FinetuneJob) -> str:
    """The name the result is published under: serve.adapterName, else the FinetuneJob's name."""
    serve = job.spec.serve
    return (serve.adapter_name if serve and serve.adapter_name else None) or job.metadata.name


def owner_reference(job: FinetuneJob) -> dict[str, Any]:
    return ownership.owner_reference(KIND, job.metadata)


def owner_labels(job: FinetuneJob) -> dict[str, str]:
    return ownership.owner_labels(KIND, job.metadata.name)


def runtime_spec_json(job: FinetuneJob) -> str:
    """The runtime's configuration: the whole spec, camelCase as on the wire, compact and
    key-sorted (stable bytes, so an unchanged spec never rewrites the annotation)."""
    return json.dumps(job.spec.wire(), sort_keys=True, separators=(",", ":"))


def _claim(uri: str) -> str | None:
    return uri[len("pvc://") :].split("/", 1)[0] if uri.startswith("pvc://") else None


def pvc_claims(job: FinetuneJob) -> list[tuple[str, bool]]:
    """(claim, read_only) for each claim the inputs/output name, in first-use order; the
    checkpoint's claim is left out (the TrainingJob mounts it read-write itself)."""
    spec = job.spec
    skip = _claim(spec.checkpoint.uri) if spec.checkpoint else None
    out: dict[str, bool] = {}
    for uri, read_only in ((spec.base_model.uri, True), (spec.dataset.uri, True), (spec.output.uri, False)):
        claim = _claim(uri)
        if claim is None or claim == skip:
            continue
        out[claim] = out.get(claim, True) and read_only
    return list(out.items())


def _non_empty(d: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys whose value is not an empty map/list (readability; defaults stay)."""
    return {k: v for k, v in d.items() if v != {} and v != []}


def _template(job: FinetuneJob) -> dict[str, Any]:
    tmpl = _non_empty(job.spec.template.wire())
    volumes = list(tmpl.get("volumes") or [])
    mounts = list(tmpl.get("volumeMounts") or [])
    taken = {m["mountPath"].rstrip("/") for m in mounts}
    names = {v["name"] for v in volumes}
    for claim, read_only in pvc_claims(job):
        path = f"{PVC_ROOT}/{claim}"
        if path in taken:
            continue  # the user mounts it already (their choice of volume wins)
        name = bounded_name(f"{PVC_VOLUME_PREFIX}{claim}")
        if name in names:
            continue
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim, **({"readOnly": True} if read_only else {})}})
        mount: dict[str, Any] = {"mountPath": path, "name": name}
        if read_only:
            mount["readOnly"] = True
        mounts.append(mount)
    if volumes:
        tmpl["volumes"] = volumes
    if mounts:
        tmpl["volumeMounts"] = mounts
    return tmpl


def build_training_job(job: FinetuneJob) -> dict[str, Any]:
    """The child TrainingJob body, ready for server-side apply."""
    if not job.metadata.uid:
        raise ValueError("the FinetuneJob has no metadata.uid: its child needs an owner reference")
    spec = job.spec
    tj: dict[str, Any] = {
        "image": spec.image or DEFAULT_TRAINER_IMAGE,
        "command": list(ENTRY),
        "nodes": spec.nodes,
        "resources": spec.resources.wire(),
        "network": spec.network.wire(),
        "scheduling": spec.scheduling.wire(),
        "failurePolicy": spec.failure_policy.wire(),
        "runPolicy": {k: v for k, v in spec.run_policy.wire().items() if k != "ttlSecondsAfterFinished"},
        "template": _template(job),
    }
    tj = _non_empty(tj)
    if spec.procs_per_node is not None:
        tj["procsPerNode"] = spec.procs_per_node
    if spec.hyperparameters.max_steps is not None:
        tj["totalSteps"] = spec.hyperparameters.max_steps
    if spec.checkpoint is not None:
        tj["checkpoint"] = spec.checkpoint.wire()
    return {
        "apiVersion": GROUP_VERSION,
        "kind": T.KIND,
        "metadata": {
            "name": training_job_name(job.metadata.name),
            "namespace": job.metadata.namespace or "default",
            "labels": dict(sorted(owner_labels(job).items())),
            "annotations": {L.FINETUNE_SPEC_ANNOTATION: runtime_spec_json(job)},
            "ownerReferences": [owner_reference(job)],
        },
        "spec": dict(sorted(tj.items())),
    }


def build_finetune_children(job: FinetuneJob) -> list[dict[str, Any]]:
    """Every child the job should have while it is not finished-and-expired."""
    return [build_training_job(job)]


def build_inference_service(job: FinetuneJob) -> dict[str, Any]:
    """The InferenceService ``serve.create`` makes when it does not exist: the base model,
    default engine (LoRA always on) and scaling, one GPU when the finetune used GPUs. Not owned (see the
    module essay)."""
    serve = job.spec.serve
    if serve is None:
        raise ValueError("spec.serve is not set")
    base = job.spec.base_model
    model: dict[str, Any] = {"uri": base.uri}
    if base.revision:
        model["revision"] = base.revision
    if base.manifest_sha256:
        model["manifestSha256"] = base.manifest_sha256
    if base.allow_pickle:
        model["allowPickle"] = True
    if base.trust_remote_code:
        model["trustRemoteCode"] = True
    meta: dict[str, Any] = {
        "name": serve.inference_service_name,
        "namespace": job.metadata.namespace or "default",
        "labels": {L.CREATED_BY_FINETUNE_JOB: job.metadata.name},
    }
    # LoRA always on: a service made to serve finetunes takes every later adapter without a restart.
    spec: dict[str, Any] = {"model": model, "engine": {"lora": "enabled"}}
    if job.spec.resources.gpus:
        spec["resources"] = {"gpus": 1, "gpuResourceName": job.spec.resources.gpu_resource_name}
    return {"apiVersion": GROUP_VERSION, "kind": I.KIND, "metadata": meta, "spec": spec}
