"""The service as a whole: metadata for the gateway, readiness, and a real uvicorn process."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import jwt
import pytest

from app.db import Database
from nexus_testing import EtcdServer, ServiceProcess, free_port

from .helpers import ADMIN, ADMIN_KEY, INTERNAL_TOKEN, PASSWORD, bearer

SERVICE_DIR = Path(__file__).resolve().parents[1]


async def test_metadata_marks_login_refresh_and_jwks_public(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/metadata")).json()
    assert body["service"]["name"] == "auth"
    endpoints = {(e["method"], e["path"]): e for e in body["endpoints"]}
    public = {key for key, e in endpoints.items() if e["public"]}
    assert public == {
        ("POST", "/v1/auth/token"),
        ("POST", "/v1/auth/refresh"),
        ("GET", "/.well-known/jwks.json"),
    }
    assert {("POST", "/v1/auth/introspect"), ("DELETE", "/v1/api-keys/{id}")} <= set(endpoints)
    assert body["options"]["jwks_path"] == "/.well-known/jwks.json"
    assert (body["options"]["issuer"], body["options"]["audience"]) == ("nexus-auth", "nexus")


async def test_readyz_checks_the_database(client: httpx.AsyncClient) -> None:
    resp = await client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json()["checks"]["database"]["status"] == "ok"
    assert resp.json()["checks"]["database"]["critical"] is True


async def test_database_ping_fails_when_unreachable() -> None:
    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(OSError, match=r"(?i)connect"):
            await db.ping()
    finally:
        await db.close()


@pytest.mark.integration
def test_real_process_registers_and_serves(tmp_path: Path) -> None:
    etcd = EtcdServer(str(tmp_path / "etcd")).start()
    env = {
        "ETCD_ENDPOINTS": etcd.endpoint,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        "JWT_SIGNING_KEY_FILE": str(tmp_path / "jwt.pem"),
        "NEXUS_ADMIN_API_KEY": ADMIN_KEY,
        "NEXUS_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "64",
        "PASSWORD_HASH_PARALLELISM": "1",
    }
    service = ServiceProcess(SERVICE_DIR, env=env)
    try:
        service.start(wait="/readyz")
        _exercise(service.url)
        assert list(etcd.get_prefix("/nexus/services/auth/"))
        service.stop()
        assert etcd.get_prefix("/nexus/services/auth/") == {}  # deregistered on shutdown
    finally:
        service.stop()
        etcd.cleanup()
    assert service.wait() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it caught
    log = service.output()
    assert ADMIN_KEY not in log
    assert PASSWORD not in log


def _exercise(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        body = {"username": "zoe", "password": PASSWORD}
        assert client.post("/v1/users", json=body, headers=ADMIN).status_code == 201
        tokens = client.post("/v1/auth/token", json=body).json()
        key = jwt.PyJWKClient(f"{url}/.well-known/jwks.json").get_signing_key_from_jwt(
            tokens["access_token"]
        )
        claims = jwt.decode(tokens["access_token"], key.key, algorithms=["EdDSA"], audience="nexus")
        assert claims["username"] == "zoe"
        me = client.get("/v1/auth/me", headers=bearer(tokens["access_token"]))
        assert me.json()["username"] == "zoe"
