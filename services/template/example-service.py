"""The bare Nexus service contract in one file, without the kit.

Shows what any service (in any language) must do to be discovered and routed by the gateway:

1. serve ``GET /health``, ``GET /readyz``, ``GET /v1/metadata`` (schema v1) and ``GET /metrics``;
2. put ``/nexus/services/<name>/<instance-id>`` in etcd on a lease, keep the lease alive, and
   delete the key on shutdown;
3. answer errors in the OpenAI envelope.

Run: ``SERVICE_PORT=9001 ETCD_ENDPOINTS=http://127.0.0.1:2379 python example-service.py``.
Real services should use ``nexus_kit.create_app`` instead (see app/main.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import aetcd
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

NAME = os.environ.get("SERVICE_NAME", "example")
PORT = int(os.environ.get("SERVICE_PORT", "9001"))
BASE_URL = os.environ.get("SERVICE_ADVERTISE_URL", f"http://127.0.0.1:{PORT}")
ETCD = os.environ.get("ETCD_ENDPOINTS", "").split(",")[0].strip()
PREFIX = os.environ.get("NEXUS_ETCD_PREFIX", "/nexus/services/")
TTL = int(os.environ.get("ETCD_LEASE_TTL_S", "15"))
INSTANCE_ID = f"{NAME}-{uuid.uuid4().hex[:8]}"
KEY = f"{PREFIX}{NAME}/{INSTANCE_ID}".encode()
ECHOES = Counter("nexus_example_echo_total", "Echo requests served.")


async def keep_registered() -> None:
    """Register on a lease and refresh it; start over whenever etcd goes away."""
    parts = urlsplit(ETCD)
    value = json.dumps({
        "name": NAME, "instance_id": INSTANCE_ID, "base_url": BASE_URL,
        "metadata_url": f"{BASE_URL}/v1/metadata", "version": "0.1.0", "kind": "nexus",
    }).encode()
    while True:
        try:
            async with aetcd.Client(host=parts.hostname or "127.0.0.1", port=parts.port or 2379,
                                    timeout=3) as client:
                lease = await client.lease(TTL)
                await client.put(KEY, value, lease=lease)
                while True:
                    await asyncio.sleep(TTL / 3)
                    reply = await client.refresh_lease(lease.id)
                    if reply is None or reply.TTL <= 0:
                        break  # lease lost: register again
        except asyncio.CancelledError:
            raise
        except Exception:
            await asyncio.sleep(1)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(keep_registered()) if ETCD else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        parts = urlsplit(ETCD)
        with contextlib.suppress(Exception):
            async with aetcd.Client(host=parts.hostname or "127.0.0.1", port=parts.port or 2379,
                                    timeout=3) as client:
                await client.delete(KEY)


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/readyz")
async def readyz() -> dict[str, object]:
    return {"status": "ready", "checks": {}}


@app.get("/v1/metadata")
async def metadata() -> dict[str, object]:
    return {
        "schema_version": "v1",
        "service": {"name": NAME, "version": "0.1.0", "instance_id": INSTANCE_ID,
                    "description": "Bare-contract example service"},
        "capabilities": {"domains": ["example"], "modalities": ["text"], "streaming": False},
        "endpoints": [{"path": "/v1/echo", "method": "POST", "operation_id": "template.echo"}],
    }


@app.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@app.post("/v1/echo")
async def echo(request: Request) -> JSONResponse:
    try:
        body = await request.json()
        message = body["message"]
        if not isinstance(message, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        error = {"message": "Body must be {\"message\": string}.",
                 "type": "invalid_request_error", "param": "message", "code": "invalid_value"}
        return JSONResponse({"error": error}, status_code=400)
    ECHOES.inc()
    return JSONResponse({"message": message, "service": NAME})


if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=PORT)
