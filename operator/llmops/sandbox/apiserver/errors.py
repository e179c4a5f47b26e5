"""Errors answered as `kind: Status` bodies, worded like kube-apiserver's."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An answer that is not a success. `status_body()` is what goes on the wire."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details
        self.retry_after = retry_after

    def status_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details = dict(self.details or {})
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            body["details"] = details
        return body


def error_response(e: ApiError) -> web.Response:
    """The HTTP answer for `e` (the emulator's and the fault proxy's): Status body, Retry-After."""
    headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else None
    return web.Response(body=json.dumps(e.status_body()).encode(), status=e.code,
                        content_type="application/json", headers=headers)


def too_old_resource_version(rv: int, oldest: int) -> ApiError:
    """A watch resuming before the retained history (the real server's wording)."""
    return ApiError(410, f"too old resource version: {rv} ({oldest})")


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        404,
        f'{_qualified(group, plural)} "{name}" not found',
        details={"name": name, "group": group, "kind": plural},
    )


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        409,
        f'{_qualified(group, plural)} "{name}" already exists',
        reason="AlreadyExists",
        details={"name": name, "group": group, "kind": plural},
    )


def conflict(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again",
        details={"name": name, "group": group, "kind": plural},
    )


def gone(message: str) -> ApiError:
    return ApiError(410, message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def invalid(kind: str, group: str, name: str, causes: list[dict[str, str]], message: str) -> ApiError:
    return ApiError(
        422, message, details={"name": name, "group": group, "kind": kind, "causes": causes}
    )
