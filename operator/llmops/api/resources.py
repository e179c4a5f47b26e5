"""Per-node resources and network of the worker pods (TrainingJob and FinetuneJob; the
InferenceService reuses ``Resources``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, field_validator

from llmops.api.scalars import DNSLabel, Quantity, ResourceName
from llmops.api.schema import as_set, keyed, require_unique
from llmops.api.wire import SpecModel


class Resources(SpecModel):
    """Per-node (per-pod) resources. One worker pod runs on each node and owns its GPUs."""

    gpus: int = Field(
        default=0, ge=0, le=64, strict=True,
        description="Accelerators per node (whole devices, an integer >= 0). 0 runs on CPU.",
    )
    gpu_resource_name: ResourceName = Field(
        default="nvidia.com/gpu",
        description="Extended resource that counts accelerators, e.g. nvidia.com/gpu, amd.com/gpu, habana.ai/gaudi.",
    )
    cpu: Quantity | None = Field(default=None, description="CPU request and limit per node, e.g. \"8\" or \"500m\".")
    memory: Quantity | None = Field(default=None, description="Memory request and limit per node, e.g. \"64Gi\".")
    shared_memory: Quantity | None = Field(
        default=None,
        description="Size of the in-memory /dev/shm volume (NCCL and data loaders need more than the 64Mi default).",
    )

    def quantities(self) -> dict[str, str]:
        """What one pod requests (requests == limits): cpu, memory and the accelerators under
        their resource name, sorted by name; unset ones left out."""
        out = {"cpu": self.cpu, "memory": self.memory, self.gpu_resource_name: str(self.gpus) if self.gpus else None}
        return {k: v for k, v in sorted(out.items()) if v}


class RdmaResource(SpecModel):
    """One RDMA device resource requested per node."""

    name: ResourceName = Field(description="Device plugin resource, e.g. rdma/hca or an SR-IOV resource name.")
    count: int = Field(default=1, ge=1, le=64, description="Devices per node.")


class Rdma(SpecModel):
    """RDMA / InfiniBand / RoCE settings for multi-node collectives."""

    resources: list[RdmaResource] = Field(
        default_factory=list, max_length=8, json_schema_extra=keyed("name"),
        description="Device resources requested per node (keyed by name).",
    )
    networks: list[DNSLabel] = Field(
        default_factory=list, max_length=8, json_schema_extra=as_set(),
        description="Multus NetworkAttachmentDefinition names in the job's namespace (names only: no namespace).",
    )
    nccl_socket_ifname: Annotated[str, StringConstraints(max_length=128, pattern=r"^[A-Za-z0-9_,^=.-]*$")] | None = Field(
        default=None, description="NCCL_SOCKET_IFNAME for bootstrap traffic, e.g. eth0 or ^lo,docker."
    )
    nccl_ib_hca: Annotated[str, StringConstraints(max_length=256, pattern=r"^[A-Za-z0-9_,^=:.-]*$")] | None = Field(
        default=None, description="NCCL_IB_HCA selecting the HCAs, e.g. mlx5_0,mlx5_1."
    )

    @field_validator("resources")
    @classmethod
    def _unique_resources(cls, v: list[RdmaResource]) -> list[RdmaResource]:
        require_unique([r.name for r in v], "name")
        return v


class Network(SpecModel):
    """Network settings of the worker pods."""

    rdma: Rdma | None = Field(default=None, description="RDMA devices, secondary networks and NCCL hints.")
