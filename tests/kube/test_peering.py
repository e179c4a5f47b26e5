"""Peering rule (Kopf's): pause while another live peer has a priority >= ours."""

from __future__ import annotations

import datetime

import pytest
from llmops.kube.peering import peers_blocking

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def peer(priority: int, seen_ago: int, lifetime: int = 60) -> dict:
    seen = NOW - datetime.timedelta(seconds=seen_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


@pytest.mark.parametrize(
    ("status", "blocking"),
    [
        ({}, []),
        ({"me": peer(10, 0)}, []),
        ({"me": peer(10, 0), "other": peer(5, 0)}, []),
        ({"me": peer(10, 0), "other": peer(20, 0)}, ["other"]),
        ({"me": peer(10, 0), "other": peer(10, 0)}, ["other"]),  # same priority: both pause, like Kopf
        ({"me": peer(10, 0), "other": peer(20, 61)}, []),  # dead peer
    ],
)
def test_peers_blocking(status: dict, blocking: list[str]) -> None:
    assert peers_blocking(status, "me", 10, NOW) == blocking
