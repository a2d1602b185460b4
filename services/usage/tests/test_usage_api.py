"""OpenAI's Usage API: buckets, grouping, filters, pages; admins see all, users their own."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from nexus_testing.openai_schema import assert_openai_schema

from .support import ADMIN, ALICE, BOB, INGEST, T0, record

DAY = 86_400


async def _seed(client: httpx.AsyncClient) -> None:
    records = [
        record(created_at=T0 + 5, model="m1", input_tokens=10, output_tokens=5, cached_tokens=4),
        record(created_at=T0 + 70, model="m2", input_tokens=1, output_tokens=2),
        record(created_at=T0 + DAY + 1, model="m1", input_tokens=100, output_tokens=50),
        record(created_at=T0 + 9, key_id="key_bob", subject="usr_bob", input_tokens=7,
               output_tokens=7),
        record(created_at=T0 + 9, model="m1", input_tokens=None, output_tokens=None),
        record(created_at=T0 + 3, kind="embeddings", endpoint="/v1/embeddings", model="e1",
               input_tokens=8, output_tokens=None),
        record(created_at=T0 + 3, kind="images", endpoint="/v1/images/generations", model="i1",
               images=2, image_size="256x256", input_tokens=None, output_tokens=None),
        record(created_at=T0 + 3, kind="audio_speeches", endpoint="/v1/audio/speech",
               model="tts-1", characters=45, input_tokens=None, output_tokens=None),
    ]  # fmt: skip
    resp = await client.post("/v1/usage/records", json={"records": records}, headers=INGEST)
    assert resp.json()["inserted"] == len(records)


async def _get(
    client: httpx.AsyncClient, kind: str, headers: dict[str, str], **params: Any
) -> httpx.Response:
    return await client.get(f"/v1/organization/usage/{kind}", params=params, headers=headers)


async def test_admin_sees_every_key_in_openai_shape(client: httpx.AsyncClient) -> None:
    await _seed(client)
    resp = await _get(client, "completions", ADMIN, start_time=T0, end_time=T0 + 3 * DAY,
                      group_by=["model", "api_key_id"])  # fmt: skip
    assert resp.status_code == 200, resp.text
    page = resp.json()
    assert_openai_schema("UsageResponse", page)
    assert [b["start_time"] for b in page["data"]] == [T0, T0 + DAY, T0 + 2 * DAY]
    assert page["data"][2]["results"] == []
    first = {(r["model"], r["api_key_id"]): r for r in page["data"][0]["results"]}
    assert first["m1", "key_alice"]["num_model_requests"] == 2  # one of them with unknown usage
    assert first["m1", "key_alice"]["input_tokens"] == 10
    assert first["m1", "key_alice"]["input_cached_tokens"] == 4
    assert first["m1", "key_bob"]["output_tokens"] == 7
    assert first["m2", "key_alice"]["input_tokens"] == 1
    assert page["has_more"] is False
    assert page["next_page"] is None


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [("embeddings", "input_tokens", 8), ("images", "images", 2),
     ("audio_speeches", "characters", 45)],
)  # fmt: skip
async def test_other_kinds(client: httpx.AsyncClient, kind: str, field: str, value: int) -> None:
    await _seed(client)
    resp = await _get(client, kind, ADMIN, start_time=T0, end_time=T0 + DAY, group_by="model")
    page = resp.json()
    assert_openai_schema("UsageResponse", page)
    [result] = page["data"][0]["results"]
    assert result[field] == value
    assert result["num_model_requests"] == 1


async def test_minute_buckets_and_pages(client: httpx.AsyncClient) -> None:
    await _seed(client)
    params = {"start_time": T0, "end_time": T0 + 180, "bucket_width": "1m", "limit": 2}
    first = (await _get(client, "completions", ADMIN, **params)).json()
    assert [b["start_time"] for b in first["data"]] == [T0, T0 + 60]
    assert first["has_more"] is True
    assert first["data"][0]["results"][0]["input_tokens"] == 17
    assert first["data"][1]["results"][0]["input_tokens"] == 1
    second = (await _get(client, "completions", ADMIN, page=first["next_page"], **params)).json()
    assert_openai_schema("UsageResponse", second)
    assert [b["start_time"] for b in second["data"]] == [T0 + 120]
    assert second["has_more"] is False


async def test_a_user_sees_only_their_own(client: httpx.AsyncClient) -> None:
    await _seed(client)
    mine = (await _get(client, "completions", ALICE, start_time=T0, end_time=T0 + DAY,
                       group_by="api_key_id")).json()  # fmt: skip
    assert {r["api_key_id"] for r in mine["data"][0]["results"]} == {"key_alice"}
    forbidden = await _get(client, "completions", ALICE, start_time=T0, api_key_ids="key_bob")
    assert forbidden.status_code == 403
    assert_openai_schema("ErrorResponse", forbidden.json())
    other_user = await _get(client, "completions", BOB, start_time=T0, user_ids="usr_alice")
    assert other_user.status_code == 403


async def test_key_summary_for_the_owner(client: httpx.AsyncClient) -> None:
    await _seed(client)
    resp = await client.get("/v1/usage/keys/key_alice", headers=ALICE)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["total"]["input_tokens"] == 10 + 1 + 100 + 8
    assert body["total"]["unknown_usage_requests"] == 3
    assert body["user_id"] == "usr_alice"
    assert {m["model"] for m in body["models"]} >= {"m1", "m2"}
    assert (await client.get("/v1/usage/keys/key_alice", headers=BOB)).status_code == 403
    assert (await client.get("/v1/usage/keys/key_alice", headers=ADMIN)).status_code == 200


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "start_time"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"start_time": T0, "bucket_width": "1w"}, "bucket_width"),
        ({"start_time": T0, "limit": 0}, "limit"),
        ({"start_time": T0, "bucket_width": "1d", "limit": 32}, "limit"),
        ({"start_time": T0, "end_time": T0}, "end_time"),
        ({"start_time": T0, "group_by": "project_id"}, "group_by"),
        ({"start_time": T0, "page": "x"}, "page"),
        ({"start_time": T0, "project_ids": "p"}, "project_ids"),
    ],
)
async def test_bad_parameters_are_400(
    client: httpx.AsyncClient, params: dict[str, Any], param: str
) -> None:
    resp = await _get(client, "completions", ADMIN, **params)
    assert resp.status_code == 400, resp.text
    assert_openai_schema("ErrorResponse", resp.json())
    assert resp.json()["error"]["param"] == param


async def test_no_identity_is_401(client: httpx.AsyncClient) -> None:
    resp = await _get(client, "completions", {}, start_time=T0)
    assert resp.status_code == 401
