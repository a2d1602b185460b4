"""Ingest: gateway-only, idempotent on the record id, survives a restart (migrations re-run)."""

from __future__ import annotations

import httpx

from .conftest import MakeSettings, serve
from .support import ADMIN, INGEST, T0, record


async def _completions(client: httpx.AsyncClient) -> dict[str, int]:
    resp = await client.get(
        "/v1/organization/usage/completions",
        params={"start_time": T0, "end_time": T0 + 86_400},
        headers=ADMIN,
    )
    assert resp.status_code == 200, resp.text
    results = resp.json()["data"][0]["results"]
    return {"requests": sum(r["num_model_requests"] for r in results),
            "input": sum(r["input_tokens"] for r in results)}  # fmt: skip


async def test_a_resent_batch_counts_once(client: httpx.AsyncClient) -> None:
    batch = {"records": [record(), record(), record(input_tokens=None, output_tokens=None)]}
    first = await client.post("/v1/usage/records", json=batch, headers=INGEST)
    assert first.json() == {"object": "usage.ingest", "received": 3, "inserted": 3}
    again = await client.post("/v1/usage/records", json=batch, headers=INGEST)
    assert again.json()["inserted"] == 0
    assert await _completions(client) == {"requests": 3, "input": 20}


async def test_records_survive_a_restart(make_settings: MakeSettings) -> None:
    settings = make_settings()
    async with serve(settings) as client:
        resp = await client.post("/v1/usage/records", json={"records": [record()]}, headers=INGEST)
        assert resp.status_code == 200
    async with serve(settings) as client:  # migrations run again: a no-op
        assert await _completions(client) == {"requests": 1, "input": 10}


async def test_ingest_needs_the_internal_token(client: httpx.AsyncClient) -> None:
    batch = {"records": [record()]}
    none = await client.post("/v1/usage/records", json=batch)
    assert none.status_code == 401
    wrong = await client.post(
        "/v1/usage/records", json=batch, headers={"Authorization": "Bearer nope-nope-nope-nope"}
    )
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "permission_denied"
    user = await client.post("/v1/usage/records", json=batch, headers={**ADMIN})
    assert user.status_code == 401


async def test_bad_records_are_400_naming_the_field(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v1/usage/records", json={"records": [record(input_tokens=-1)]}, headers=INGEST
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "records[0].input_tokens"
    resp = await client.post("/v1/usage/records", content=b"{nope", headers=INGEST)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_json"
