"""Shared helpers for tests/admin: run an Argo CD Lua health check on an object with lupa."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest

HEALTH = pathlib.Path(__file__).resolve().parents[2] / "manifests" / "argocd" / "health"


def _to_lua(lua, value):  # noqa: ANN001, ANN202
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def run_health(obj: dict) -> dict:
    """Run manifests/argocd/health/llmops.dev_<kind>/health.lua the way Argo CD does: the object
    is the global ``obj`` and the script's return value is the health."""
    import lupa

    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute((HEALTH / f"llmops.dev_{obj['kind']}" / "health.lua").read_text())
    return {"status": result["status"], "message": result["message"]}


@pytest.fixture(scope="session")
def argo_health() -> Callable[[dict], dict]:
    pytest.importorskip("lupa")
    return run_health
