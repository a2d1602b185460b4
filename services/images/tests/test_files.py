"""``url`` results: unguessable ids, served without auth, gone after IMAGES_URL_TTL_S."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from app.files import FileStore
from app.main import build_app
from tests.conftest import ClientFactory, PngDecoder, SettingsFactory

GENERATE = "/v1/images/generations"
BASE = "http://gw.test:8800/services/images"


async def _url_of(client: httpx.AsyncClient) -> str:
    resp = await client.post(GENERATE, json={"prompt": "a kite", "size": "256x256"})
    url: str = resp.json()["data"][0]["url"]
    assert url.startswith(f"{BASE}/v1/images/files/")
    return url


async def test_url_is_under_public_base_and_expires(
    make_settings: SettingsFactory, open_client: ClientFactory, decode_png: PngDecoder
) -> None:
    app = build_app(make_settings(images_public_base_url=BASE, images_url_ttl_s=60))
    async with open_client(app) as client:
        path = (await _url_of(client)).removeprefix(BASE)
        resp = await client.get(path)
        assert resp.status_code == 200
        assert decode_png(resp.content).size == (256, 256)
        assert resp.headers["cache-control"].startswith("private, max-age=")
        # Move the store's clock past the TTL rather than sleeping through it.
        app.state.images.files.clock = lambda: time.time() + 61
        gone = await client.get(path)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "file_not_found"


async def test_unknown_and_malformed_ids_are_404(
    make_settings: SettingsFactory, open_client: ClientFactory
) -> None:
    async with open_client(build_app(make_settings())) as client:
        for file_id in ("A" * 43, "nope", "..%2F..%2Fetc%2Fpasswd"):
            resp = await client.get(f"/v1/images/files/{file_id}")
            assert resp.status_code == 404
            assert resp.json()["error"]["type"] == "invalid_request_error"


async def test_ids_differ_and_expired_files_leave_the_disk(tmp_path: Path) -> None:
    now = [time.time()]
    store = FileStore("", ttl_s=10, clock=lambda: now[0])
    await store.open()
    try:
        ids = [await store.put(b"png") for _ in range(20)]
        assert len(set(ids)) == 20
        assert all(len(i) == 43 for i in ids)
        root = store._path(ids[0]).parent
        assert await store.get(ids[0]) is not None
        now[0] += 11
        assert await store.get(ids[0]) is None
        assert await store.sweep() == 19
        assert list(root.iterdir()) == []
    finally:
        await store.close()
    assert not root.exists()  # a private directory goes with the process


async def test_replicas_sharing_a_directory_serve_each_others_files(tmp_path: Path) -> None:
    first, second = FileStore(str(tmp_path), 60), FileStore(str(tmp_path), 60)
    await first.open()
    await second.open()
    file_id = await first.put(b"png bytes")
    await first.close()  # a shared directory outlives the process that wrote into it
    found = await second.get(file_id)
    await second.close()
    assert found is not None
    assert found[0] == b"png bytes"
