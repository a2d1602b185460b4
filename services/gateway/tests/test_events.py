"""The admin live feed ``GET /v1/services/events`` against real etcd, a real gateway (uvicorn)
and a real template copy: a snapshot on connect, another when the copy registers, another when
it stops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.events import EventHub
from app.main import build_app
from nexus_testing import EtcdServer, ServiceProcess, UvicornThread, wait_for_http
from tests.support import settings

pytestmark = pytest.mark.integration
TEMPLATE = Path(__file__).resolve().parents[2] / "template"


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer().start()
    yield server
    server.cleanup()


def snapshots(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The ``snapshot`` events of an SSE line stream, parsed."""
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "snapshot":
            yield json.loads(line.removeprefix("data: "))
            event = None


def next_matching(
    events: Iterator[dict[str, Any]], predicate: Any, limit: int = 50
) -> dict[str, Any]:
    for _, doc in zip(range(limit), events, strict=False):
        if predicate(doc):
            return doc
    raise AssertionError("no matching snapshot")


def names(doc: dict[str, Any]) -> set[str]:
    return {s["name"] for s in doc["services"]["data"]}


def test_feed_follows_a_service_coming_and_going(etcd: EtcdServer) -> None:
    app = build_app(settings(etcd_endpoints=etcd.endpoint))
    with UvicornThread(app) as gw:
        wait_for_http(f"{gw.url}/readyz", timeout_s=15)
        with (
            httpx.Client(timeout=httpx.Timeout(30, read=20)) as client,
            client.stream("GET", f"{gw.url}/v1/services/events") as resp,
        ):
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = snapshots(resp.iter_lines())
            first = next(events)
            assert first["object"] == "nexus.snapshot"
            assert "evt" not in names(first)
            assert set(first) >= {"revision", "services", "routes", "models"}
            svc = ServiceProcess(
                TEMPLATE, env={"SERVICE_NAME": "evt", "ETCD_ENDPOINTS": etcd.endpoint}
            ).start()
            try:
                seen = next_matching(
                    events,
                    lambda d: any(
                        s["name"] == "evt" and s["instances"][0]["state"] == "ready"
                        for s in d["services"]["data"]
                    ),
                )
                paths = {r["path"] for r in seen["routes"]["data"]}
                assert {"/v1/echo", "/services/evt/v1/echo"} <= paths
                assert seen["revision"] > first["revision"]
            finally:
                svc.stop()
            gone = next_matching(events, lambda d: "evt" not in names(d))
            # Its paths may stay a while, answering 503 (departed routes), but with no target.
            left = [r for r in gone["routes"]["data"] if r["path"] == "/services/evt/v1/echo"]
            assert all(not r["targets"] for r in left)


async def test_hub_coalesces_swaps_and_ends_when_closed() -> None:
    hub = EventHub()
    version = {"n": 0}
    stream = hub.stream(lambda: {"n": version["n"]}, lambda: False, poll_s=60, keepalive_s=60)
    assert await anext(stream) == b"retry: 1000\n\n"
    assert await anext(stream) == b'event: snapshot\ndata: {"n":0}\n\n'
    # The poll is 60 s: only notify/close can wake the stream within the 10 s bound.
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    version["n"] = 2  # two changes, one notify: one event with the latest state
    hub.notify()
    assert await asyncio.wait_for(pending, 10) == b'event: snapshot\ndata: {"n":2}\n\n'
    assert hub.subscribers == 1
    hub.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 10)
    assert hub.subscribers == 0
