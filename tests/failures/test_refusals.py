"""Refusals of children by the API server -> a stable reason, permanent or retried (issue 21).

The messages are the ones a real kube-apiserver v1.36 answers (captured from ../shared/kube):
admission plugins (ServiceAccount, Priority, ResourceQuota, PodSecurity), a
ValidatingAdmissionPolicy with and without a reason (403 and 422), RBAC, validation (422),
and discovery's 404 for an API group that is not served. Plus what is not a refusal (409,
429, 500, a plain 404) and the Deployment ReplicaFailure path of the InferenceService."""

from __future__ import annotations

import pytest
from llmops.failures import (
    ADMISSION_DENIED,
    ADMISSION_UNAVAILABLE,
    API_NOT_SERVED,
    CHILD_REJECTED,
    GANG_BACKEND_UNAVAILABLE,
    OPERATOR_FORBIDDEN,
    POD_SECURITY_VIOLATION,
    PRIORITY_CLASS_MISSING,
    QUOTA_EXCEEDED,
    REFUSAL_REASONS,
    SERVICE_ACCOUNT_MISSING,
    classify_refusal,
)
from llmops.plan.inference import replica_failure
from llmops.scheduling import GANG_APIS

SA = 'pods "a" is forbidden: error looking up service account p1/trainer: serviceaccount "trainer" not found'
PC = 'pods "b" is forbidden: no PriorityClass with name training-high was found'
QUOTA = 'pods "d" is forbidden: exceeded quota: q, requested: pods=1, used: pods=0, limited: pods=0'
QUOTA_LIMITS = 'pods "d" is forbidden: failed quota: q: must specify limits.cpu for: c'
PSA = ('pods "x" is forbidden: violates PodSecurity "baseline:latest": non-default capabilities '
       '(container "worker" must not include "IPC_LOCK" in securityContext.capabilities.add)')
VAP_403 = ("pods \"f\" is forbidden: ValidatingAdmissionPolicy 'no-deny-label' with binding 'no-deny-label' "
           "denied request: pods labelled policy-test are not allowed here")
VAP_422 = ("pods \"f\" is invalid: : ValidatingAdmissionPolicy 'no-deny-label' with binding 'no-deny-label' "
           "denied request: pods labelled policy-test are not allowed here")
WEBHOOK = 'admission webhook "validate.kyverno.svc" denied the request: image registry not allowed'
WEBHOOK_DOWN = ('Internal error occurred: failed calling webhook "validate.kyverno.svc": failed to call webhook: '
                'Post "https://kyverno-svc.kyverno.svc:443/validate": dial tcp: connection refused')
RBAC = 'pods "g" is forbidden: User "bob" cannot patch resource "pods" in API group "" in the namespace "p2"'
NS_TERMINATING = 'pods "x" is forbidden: unable to create new content in namespace p1 because it is being terminated'
INVALID = 'Pod "e" is invalid: spec.nodeSelector: Invalid value: "b c": a valid label must be an empty string'


@pytest.mark.parametrize(
    ("status", "message", "reason", "permanent"),
    [
        (403, SA, SERVICE_ACCOUNT_MISSING, False),
        (403, PC, PRIORITY_CLASS_MISSING, False),
        (403, QUOTA, QUOTA_EXCEEDED, False),
        (403, QUOTA_LIMITS, QUOTA_EXCEEDED, False),
        (403, PSA, POD_SECURITY_VIOLATION, True),
        (403, VAP_403, ADMISSION_DENIED, False),
        (422, VAP_422, ADMISSION_DENIED, False),  # a policy, not a child we built wrong
        (400, WEBHOOK, ADMISSION_DENIED, False),
        (403, WEBHOOK, ADMISSION_DENIED, False),
        (500, WEBHOOK_DOWN, ADMISSION_UNAVAILABLE, False),
        (403, RBAC, OPERATOR_FORBIDDEN, False),
        (403, NS_TERMINATING, ADMISSION_DENIED, False),
        (422, INVALID, CHILD_REJECTED, True),
        (400, "the object provided is unrecognized", CHILD_REJECTED, True),
    ],
)
def test_each_refusal_has_a_stable_reason_and_keeps_the_servers_words(status, message, reason, permanent) -> None:
    r = classify_refusal(status, message, "Pod", "t-w0-a0")
    assert r is not None and (r.reason, r.permanent) == (reason, permanent)
    assert r.message.startswith(f"Pod/t-w0-a0: {message} (") and r.child == "Pod/t-w0-a0"
    assert ("permanent" in r.message) == permanent and ("retried" in r.message) != permanent


@pytest.mark.parametrize("status", [404, 409, 410, 429, 500, 503])
def test_what_is_not_a_refusal_is_left_to_the_work_queue(status) -> None:
    assert classify_refusal(status, "the server is busy", "Pod", "x") is None


def test_an_api_that_is_not_served_names_it_and_is_a_gang_backend_when_it_is_one() -> None:
    gang = classify_refusal(404, "", "PodGroup", "t-a0", api_version="scheduling.volcano.sh/v1beta1",
                            not_served=True, gang_apis=GANG_APIS)
    assert gang is not None and (gang.reason, gang.permanent) == (GANG_BACKEND_UNAVAILABLE, False)
    assert "scheduling.volcano.sh/v1beta1 PodGroup is not served" in gang.message
    other = classify_refusal(404, "", "ScaledObject", "s", api_version="keda.sh/v1alpha1", not_served=True, gang_apis=GANG_APIS)
    assert other is not None and (other.reason, other.permanent) == (API_NOT_SERVED, False)
    assert "keda.sh/v1alpha1 ScaledObject is not served" in other.message


def test_reasons_are_camel_case_condition_reasons() -> None:
    assert len(set(REFUSAL_REASONS)) == len(REFUSAL_REASONS)
    assert all(r[0].isupper() and r.isalnum() for r in REFUSAL_REASONS)


def deployment(conditions: list[dict]) -> dict:
    return {"metadata": {"name": "svc-server"}, "status": {"conditions": conditions}}


def test_server_pods_refused_through_the_deployment_are_the_same_refusals() -> None:
    failed = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": SA.replace('"a"', '"svc-server-7d9f-x2"')}
    r = replica_failure(deployment([{"type": "Available", "status": "False"}, failed]))
    assert r is not None and r.reason == SERVICE_ACCOUNT_MISSING and r.child == "Deployment/svc-server"
    assert replica_failure(deployment([{**failed, "status": "False"}])) is None
    assert replica_failure(deployment([{**failed, "message": "some transient error"}])) is None
    assert replica_failure({}) is None
