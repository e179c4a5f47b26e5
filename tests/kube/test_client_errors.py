"""ApiError from the kubernetes client's ApiException: the Status reason and message, and the
server's Retry-After (header first, else the Status's details.retryAfterSeconds)."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException
from llmops.kube.client import api_error


class _Resp:
    def __init__(self, status: int, body: dict | str, headers: dict[str, str]) -> None:
        self.status, self.reason = status, "x"
        self.data = body if isinstance(body, str) else json.dumps(body)
        self._headers = headers

    def getheaders(self) -> dict[str, str]:
        return self._headers


def _status(code: int, reason: str, details: dict | None = None) -> dict:
    return {"kind": "Status", "code": code, "reason": reason, "message": f"m{code}", **({"details": details} if details else {})}


@pytest.mark.parametrize(
    ("code", "body", "headers", "retry_after"),
    [
        (429, _status(429, "TooManyRequests", {"retryAfterSeconds": 2}), {"Retry-After": "3"}, 3.0),
        (429, _status(429, "TooManyRequests", {"retryAfterSeconds": 2}), {}, 2.0),
        (503, _status(503, "ServiceUnavailable"), {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),
        (409, _status(409, "Conflict"), {}, None),
    ],
)
def test_api_error_keeps_reason_and_retry_after(code, body, headers, retry_after) -> None:
    err = api_error(ApiException(http_resp=_Resp(code, body, headers)))
    assert (err.status, err.reason, err.message, err.retry_after) == (code, body["reason"], f"m{code}", retry_after)


def test_api_error_without_status_body() -> None:
    err = api_error(ApiException(http_resp=_Resp(502, "<html>bad gateway</html>", {})))
    assert (err.status, err.reason, err.message, err.retry_after) == (502, "Unknown", "<html>bad gateway</html>", None)
