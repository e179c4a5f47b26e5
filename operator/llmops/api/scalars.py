"""Constrained scalar types: every string and number the API accepts is bounded and, where
Kubernetes defines a syntax (names, label keys and values, quantities), checked against it,
so the generated CRD carries the same limits as the Python model."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, StringConstraints, WithJsonSchema

#: Kubernetes resource quantity, the common subset: decimal number with an optional SI or
#: binary suffix ("500m", "2", "16Gi", "1.5G"). Exponent forms are rejected on purpose.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"


def _quantity_from_int(value: Any) -> Any:
    # Kubernetes quantities are int-or-string ("cpu: 8" is as valid as "cpu: '8'").
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_from_int),
    StringConstraints(pattern=QUANTITY_PATTERN, max_length=32),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": 32,
        }
    ),
]

#: RFC 1123 label (most object names: Secrets, ConfigMaps, PVCs, ServiceAccounts).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNSLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]
#: RFC 1123 subdomain (Secret/ConfigMap/PVC/PriorityClass names may contain dots).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNSSubdomain = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)]
#: Extended resource name such as nvidia.com/gpu, amd.com/gpu, habana.ai/gaudi, rdma/hca.
RESOURCE_NAME_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
ResourceName = Annotated[str, StringConstraints(pattern=RESOURCE_NAME_PATTERN, min_length=1, max_length=253)]
#: C identifier-ish environment variable name (what kubelet accepts, minus exotic characters).
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN, min_length=1, max_length=128)]
#: Label/annotation keys and values; values are bounded to keep CEL costs and objects small.
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=253)]
# A qualified name as pods want it in label/annotation/nodeSelector keys: an optional DNS-subdomain
# prefix and '/', then 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"  # the prefix and '/'
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"  # the name
)
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]


ShortText = Annotated[str, StringConstraints(max_length=1024)]
Arg = Annotated[str, StringConstraints(max_length=4096)]
ImageRef = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^[^\s]+$")]
#: Checkpoint / artifact locations this project can write: S3 (or compatible) and PVCs.
STORAGE_URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,62}(/[^\s]*)?|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?)$"
StorageUri = Annotated[str, StringConstraints(pattern=STORAGE_URI_PATTERN, max_length=1024)]
#: RFC 3339 timestamps as Kubernetes writes them (status only).
Time = Annotated[str, StringConstraints(max_length=64)]

MAX_LIST = 64  # default bound on user lists (env, volumes, tolerations, ...)
MAX_MAP = 64  # default bound on user maps (labels, nodeSelector, ...)

#: Object names start with a letter because they become Service names (RFC 1035 labels).
OBJECT_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
