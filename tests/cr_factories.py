"""Small builders for test objects: ``make_training_job("t").nodes(4).gpus(8).build()`` and
pod facts in a given state. Test-only: not shipped with the operator (tests/ is on the path
through tests/conftest.py)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from llmops import API_VERSION
from llmops.api.finetune import FinetuneJob, parse_finetune_job
from llmops.api.training import TrainingJob, parse_training_job
from llmops.builders.training import pod_name
from llmops.observe.pods import ContainerFacts, PodConditionFacts, PodFacts

EXAMPLE_UID = "00000000-0000-4000-8000-000000000001"


class JobBuilder:
    """Fluent builder of a TrainingJob body; ``build()`` parses it through the real model."""

    def __init__(self, name: str, namespace: str = "ml") -> None:
        self.body: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": namespace, "uid": EXAMPLE_UID, "generation": 1},
            "spec": {"image": "ghcr.io/example/trainer:1.0", "command": ["python", "-m", "train"], "nodes": 1},
        }

    def _spec(self, *path: str) -> dict[str, Any]:
        d = self.body["spec"]
        for key in path:
            d = d.setdefault(key, {})
        return d

    def nodes(self, n: int) -> JobBuilder:
        self.body["spec"]["nodes"] = n
        return self

    def gpus(self, n: int, resource: str | None = None) -> JobBuilder:
        self._spec("resources")["gpus"] = n
        if resource:
            self._spec("resources")["gpuResourceName"] = resource
        return self

    def resources(self, **kw: str) -> JobBuilder:
        self._spec("resources").update(kw)
        return self

    def rdma(self, hca: str = "rdma/hca", count: int = 1, networks: tuple[str, ...] = ("ib-net",), ib_hca: str | None = "mlx5",
             ifname: str | None = "eth0") -> JobBuilder:
        r: dict[str, Any] = {"resources": [{"name": hca, "count": count}], "networks": list(networks)}
        if ib_hca:
            r["ncclIbHca"] = ib_hca
        if ifname:
            r["ncclSocketIfname"] = ifname
        self._spec("network")["rdma"] = r
        return self

    def checkpoint(self, uri: str = "s3://ckpt/run", every_steps: int = 100, secret: str | None = "s3-creds", **kw: Any) -> JobBuilder:
        c: dict[str, Any] = {"uri": uri, "everySteps": every_steps, **kw}
        if secret and uri.startswith("s3://"):
            c["credentials"] = {"secretName": secret}
        self.body["spec"]["checkpoint"] = c
        return self

    def backend(self, name: str, timeout: int | None = None, queue: str | None = None) -> JobBuilder:
        self._spec("scheduling", "gang")["backend"] = name
        if timeout is not None:
            self._spec("scheduling", "gang")["timeoutSeconds"] = timeout
        if queue:
            self._spec("scheduling")["queueName"] = queue
        return self

    def priority(self, name: str) -> JobBuilder:
        self._spec("scheduling")["priorityClassName"] = name
        return self

    def failure_policy(self, **kw: Any) -> JobBuilder:
        self._spec("failurePolicy").update(kw)
        return self

    def run_policy(self, **kw: Any) -> JobBuilder:
        self._spec("runPolicy").update(kw)
        return self

    def template(self, **kw: Any) -> JobBuilder:
        self._spec("template").update(kw)
        return self

    def spec(self, **kw: Any) -> JobBuilder:
        self.body["spec"].update(kw)
        return self

    def status(self, status: dict[str, Any]) -> JobBuilder:
        self.body["status"] = status
        return self

    def build(self) -> TrainingJob:
        return parse_training_job(copy.deepcopy(self.body))


def make_training_job(name: str, namespace: str = "ml") -> JobBuilder:
    return JobBuilder(name, namespace)


def example_job(name: str = "llama", backend: str = "volcano") -> JobBuilder:
    """The reviewed example: 4 nodes x 8 GPUs with RDMA and S3 checkpoints."""
    return (
        make_training_job(name)
        .nodes(4)
        .gpus(8)
        .resources(cpu="96", memory="1Ti", sharedMemory="64Gi")
        .rdma(hca="rdma/ib", count=8, networks=("ib-net-0", "ib-net-1"), ib_hca="mlx5_0,mlx5_1", ifname="eth0")
        .checkpoint(uri="s3://checkpoints/llama", every_steps=200, secret="s3-creds", maxAgeSeconds=3600)
        .backend(backend, timeout=900, queue="research")
        .priority("training-high")
        .spec(totalSteps=10000)
        .template(
            nodeSelector={"nvidia.com/gpu.product": "H100-SXM"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            env=[{"name": "NCCL_DEBUG", "value": "WARN"}],
        )
    )


class FinetuneJobBuilder:
    """Fluent builder of a FinetuneJob body (a small LoRA job on PVCs by default);
    ``build()`` parses it through the real model."""

    def __init__(self, name: str, namespace: str = "ml") -> None:
        self.body: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": "FinetuneJob",
            "metadata": {"name": name, "namespace": namespace, "uid": EXAMPLE_UID, "generation": 1},
            "spec": {
                "baseModel": {"uri": "pvc://models/tiny"},
                "dataset": {"uri": "pvc://data/train.jsonl", "textField": "text"},
                "method": {"type": "lora", "lora": {"r": 4, "alpha": 8}},
                "hyperparameters": {"maxSteps": 12},
                "output": {"uri": "pvc://out/adapter"},
            },
        }

    def spec(self, **kw: Any) -> FinetuneJobBuilder:
        """Set (or, for dict values, merge into) top-level spec sections."""
        for key, value in kw.items():
            if isinstance(value, dict) and isinstance(self.body["spec"].get(key), dict):
                self.body["spec"][key] = {**self.body["spec"][key], **value}
            else:
                self.body["spec"][key] = value
        return self

    def serve(self, service: str, adapter: str | None = None, create: bool = False) -> FinetuneJobBuilder:
        serve: dict[str, Any] = {"inferenceServiceName": service, "create": create}
        if adapter:
            serve["adapterName"] = adapter
        self.body["spec"]["serve"] = serve
        return self

    def annotate(self, **annotations: str) -> FinetuneJobBuilder:
        self.body["metadata"].setdefault("annotations", {}).update(annotations)
        return self

    def status(self, status: dict[str, Any]) -> FinetuneJobBuilder:
        self.body["status"] = status
        return self

    def build(self) -> FinetuneJob:
        return parse_finetune_job(copy.deepcopy(self.body))


def make_finetune_job(name: str, namespace: str = "ml") -> FinetuneJobBuilder:
    return FinetuneJobBuilder(name, namespace)


# --- pod facts ---------------------------------------------------------------------------------


def pod(job: str, rank: int, attempt: int = 0, *, created: str = "2026-01-01T00:00:00Z") -> PodFacts:
    """A Pending, unscheduled worker pod."""
    return PodFacts(name=pod_name(job, rank, attempt), rank=rank, attempt=attempt, created=created)


def running(p: PodFacts, node: str | None = None) -> PodFacts:
    node = node or f"node-{p.rank}"
    return dataclasses.replace(
        p,
        phase="Running",
        node_name=node,
        containers=(ContainerFacts("trainer", "running"),),
        conditions=(PodConditionFacts("PodScheduled", "True"), PodConditionFacts("Ready", "True")),
    )


def scheduled_pending(p: PodFacts, node: str | None = None) -> PodFacts:
    return dataclasses.replace(p, node_name=node or f"node-{p.rank}", conditions=(PodConditionFacts("PodScheduled", "True"),))


def unschedulable(p: PodFacts, message: str = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.") -> PodFacts:
    return dataclasses.replace(p, conditions=(PodConditionFacts("PodScheduled", "False", "Unschedulable", message),))


def gated(p: PodFacts) -> PodFacts:
    return dataclasses.replace(p, conditions=(PodConditionFacts("PodScheduled", "False", "SchedulingGated"),))


def exited(p: PodFacts, code: int, reason: str | None = None, message: str | None = None) -> PodFacts:
    base = p if p.node_name else running(p)
    return dataclasses.replace(
        base,
        phase="Succeeded" if code == 0 else "Failed",
        containers=(ContainerFacts("trainer", "terminated", reason or ("Completed" if code == 0 else "Error"), message, code),),
    )


def waiting(p: PodFacts, reason: str, message: str = "") -> PodFacts:
    base = scheduled_pending(p) if not p.node_name else p
    return dataclasses.replace(base, containers=(ContainerFacts("trainer", "waiting", reason, message),))


def disrupted(p: PodFacts, reason: str, message: str = "") -> PodFacts:
    base = p if p.phase != "Pending" else running(p)
    return dataclasses.replace(base, conditions=(*base.conditions, PodConditionFacts("DisruptionTarget", "True", reason, message)))


def evicted(p: PodFacts, message: str = "The node was low on resource: memory.") -> PodFacts:
    base = running(p) if p.phase == "Pending" else p
    return dataclasses.replace(base, phase="Failed", reason="Evicted", message=message, containers=())


def terminating(p: PodFacts, until: str) -> PodFacts:
    base = running(p) if p.phase == "Pending" else p
    return dataclasses.replace(base, deletion_timestamp=until)
