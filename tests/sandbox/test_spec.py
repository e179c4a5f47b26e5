"""Pure pod-spec helpers of the node agent: $(VAR) expansion, env assembly
(fieldRef, configMapKeyRef/secretKeyRef, envFrom), requests and mount variable names."""

from __future__ import annotations

import base64
from decimal import Decimal

import pytest
from llmops.sandbox.node import spec


@pytest.mark.parametrize(
    ("text", "env", "out"),
    [
        ("$(A)/x", {"A": "1"}, "1/x"),
        ("$(MISSING)", {}, "$(MISSING)"),
        ("$$(A)", {"A": "1"}, "$(A)"),
        ("a$(A)b$(B)", {"A": "1", "B": "2"}, "a1b2"),
        ("$A", {"A": "1"}, "$A"),
    ],
)
def test_expand(text: str, env: dict[str, str], out: str) -> None:
    assert spec.expand(text, env) == out


POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
    "spec": {"nodeName": "n1"},
}
DATA = {
    ("ConfigMap", "ns", "cm"): {"k": "cv", "other": "o"},
    ("Secret", "ns", "sec"): spec.decode_secret({"data": {"s": base64.b64encode(b"sv").decode()}}),
}


def lookup(kind: str, ns: str, name: str) -> dict[str, str] | None:
    return DATA.get((kind, ns, name))


def test_container_env_sources_in_kubelet_order() -> None:
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "s"}}},
            {"name": "JOINED", "value": "$(NAME)@$(IP)"},
        ],
    }
    env = spec.container_env(POD, container, "127.1.0.5", lookup, {"BASE": "b"})
    assert env["BASE"] == "b"
    assert env["CM_k"] == "cv" and env["CM_other"] == "o"
    assert (env["NAME"], env["NS"], env["IP"], env["NODE"], env["APP"]) == ("p", "ns", "127.1.0.5", "n1", "x")
    assert (env["K"], env["S"], env["JOINED"]) == ("cv", "sv", "p@127.1.0.5")


@pytest.mark.parametrize(
    "item",
    [
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}},
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "missing"}}},
    ],
)
def test_missing_reference_is_a_config_error(item: dict) -> None:
    with pytest.raises(spec.ConfigError):
        spec.container_env(POD, {"name": "c", "env": [item]}, "127.1.0.5", lookup)


def test_optional_reference_is_skipped() -> None:
    item = {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}}}
    assert "X" not in spec.container_env(POD, {"name": "c", "env": [item]}, "127.1.0.5", lookup)


def test_command_line_expands_and_requires_a_command() -> None:
    assert spec.command_line({"command": ["echo"], "args": ["$(A)"]}, {"A": "hi"}) == ["echo", "hi"]
    with pytest.raises(spec.ConfigError):
        spec.command_line({"name": "c", "image": "busybox"}, {})


def test_pod_requests_max_of_init_and_sum_of_containers() -> None:
    pod = {"spec": {
        "initContainers": [{"resources": {"requests": {"cpu": "3"}}}],
        "containers": [
            {"resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": "2"}}},
            {"resources": {"requests": {"cpu": "500m"}}},
        ],
    }}  # fmt: skip
    assert spec.pod_requests(pod) == {"cpu": Decimal(3), "memory": Decimal(2**30), "nvidia.com/gpu": Decimal(2)}


@pytest.mark.parametrize(
    ("path", "name"), [("/data", "LLMOPS_MOUNT_DATA"), ("/ckpt/run-1", "LLMOPS_MOUNT_CKPT_RUN_1"), ("/", "LLMOPS_MOUNT_ROOT")]
)
def test_mount_env_name(path: str, name: str) -> None:
    assert spec.mount_env_name(path) == name


@pytest.mark.parametrize(
    ("resources", "qos"),
    [
        ({}, "BestEffort"),
        ({"limits": {"cpu": "1", "memory": "1Gi"}}, "Guaranteed"),
        ({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}, "Burstable"),
        ({"requests": {"nvidia.com/gpu": "1"}}, "Burstable"),
    ],
)
def test_qos_class(resources: dict, qos: str) -> None:
    assert spec.qos_class({"spec": {"containers": [{"resources": resources}]}}) == qos


def test_ip_pool_round_robin_without_early_reuse() -> None:
    from llmops.sandbox.node.agent import IpPool

    pool = IpPool("127.9.0.0/29", seed=0)  # 8 addresses: .2 .. .7 usable
    assert pool.node_ip == "127.9.0.1"
    taken = [pool.take() for _ in range(6)]
    assert len(set(taken)) == 6 and all(ip.startswith("127.9.0.") and ip not in ("127.9.0.0", "127.9.0.1") for ip in taken)
    with pytest.raises(RuntimeError):
        pool.take()
    pool.give(taken[0])
    assert pool.take() == taken[0]  # the only free one


def test_rendezvous_port_is_per_job_and_attempt() -> None:
    """All pods of one attempt agree on the port; another job or attempt gets another one, so
    torch stores of jobs sharing the host never meet. Pods of no job keep the port."""
    from llmops.sandbox.node.pod import rendezvous_port

    def pod(job: str | None, attempt: str, ns: str = "default", uid: str | None = None, name: str = "w0") -> dict:
        labels = {"llmops.dev/job-name": job, "llmops.dev/attempt": attempt} if job else {}
        owners = [{"kind": "TrainingJob", "name": job, "uid": uid, "controller": True}] if uid else []
        return {"metadata": {"namespace": ns, "name": name, "labels": labels, "ownerReferences": owners}}

    a0 = rendezvous_port(pod("a", "0"), "29500")
    assert a0 == rendezvous_port(pod("a", "0"), "29500") and 10000 <= a0 < 28000
    assert len({a0, rendezvous_port(pod("a", "1"), "29500"), rendezvous_port(pod("b", "0"), "29500"),
                rendezvous_port(pod("a", "0", ns="other"), "29500")}) == 4
    assert rendezvous_port(pod(None, "0"), "29500") == 29500
    # the same job name in two sandboxes side by side (two uids): two ports; one job's pods agree
    assert rendezvous_port(pod("a", "0", uid="u1"), "29500") != rendezvous_port(pod("a", "0", uid="u2"), "29500")
    assert rendezvous_port(pod("a", "0", uid="u1"), "29500") == rendezvous_port(pod("a", "0", uid="u1", name="w1"), "29500")
