"""Access tokens: verifiable against the published JWKS; expired, forged, ``alg: none``,
algorithm-confused and tampered tokens are all a clean 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from app.keys import load_keyring
from app.settings import AuthSettings

from .conftest import MakeSettings
from .helpers import GATEWAY, assert_error, bearer, create_user, login, serve


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj).encode())


def _claims(subject: str, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": "nexus-auth", "aud": "nexus", "sub": subject, "iat": now, "exp": now + 600,
            "username": "uma", "role": "admin"}  # fmt: skip
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def _sign(settings: AuthSettings, claims: dict[str, Any], **headers: Any) -> str:
    """A token signed with the service's own key: only the claims make it bad."""
    key = load_keyring(settings.jwt_signing_key_file, [], "EdDSA").signing
    assert key.private_key is not None
    return jwt.encode(
        claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid, **headers}
    )


def _kid(settings: AuthSettings) -> str:
    return load_keyring(settings.jwt_signing_key_file, [], "EdDSA").signing.kid


async def _assert_rejected(client: httpx.AsyncClient, token: str, message: str = "") -> None:
    error = assert_error(await client.get("/v1/auth/me", headers=bearer(token)), 401)
    assert error["code"] == "invalid_api_key"
    assert message in error["message"]
    resp = await client.post("/v1/auth/introspect", json={"token": token}, headers=GATEWAY)
    assert resp.json()["active"] is False


async def test_issued_token_verifies_against_jwks(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "uma")
    token = (await login(client, "uma"))["access_token"]
    resp = await client.get("/.well-known/jwks.json")
    assert resp.status_code == 200
    assert "max-age" in resp.headers["cache-control"]
    jwks = jwt.PyJWKSet.from_dict(resp.json())
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = jwt.decode(
        token, key.key, algorithms=[header["alg"]], audience="nexus", issuer="nexus-auth"
    )
    assert (claims["sub"], claims["role"], claims["username"]) == (user["id"], "user", "uma")
    assert claims["exp"] - claims["iat"] == 900
    for jwk in resp.json()["keys"]:
        assert "d" not in jwk  # public halves only


async def test_expired_token(client: httpx.AsyncClient, settings: AuthSettings) -> None:
    user = await create_user(client, "uma")
    past = int(time.time()) - 3600
    token = _sign(settings, _claims(user["id"], iat=past, exp=past + 60))
    await _assert_rejected(client, token, "expired")


async def test_forged_signature(client: httpx.AsyncClient, settings: AuthSettings) -> None:
    user = await create_user(client, "uma")
    rogue = ed25519.Ed25519PrivateKey.generate()
    token = jwt.encode(
        _claims(user["id"]), rogue, algorithm="EdDSA", headers={"kid": _kid(settings)}
    )
    await _assert_rejected(client, token)


async def test_alg_none(client: httpx.AsyncClient, settings: AuthSettings) -> None:
    user = await create_user(client, "uma")
    header = {"alg": "none", "typ": "JWT", "kid": _kid(settings)}
    token = f"{_segment(header)}.{_segment(_claims(user['id']))}."
    await _assert_rejected(client, token)


async def test_hs256_with_the_public_key(client: httpx.AsyncClient, settings: AuthSettings) -> None:
    """The classic confusion: HMAC 'signed' with the published public key as the secret."""
    user = await create_user(client, "uma")
    public = load_keyring(settings.jwt_signing_key_file, [], "EdDSA").signing.public_key
    for secret in (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    ):
        signing_input = (
            f"{_segment({'alg': 'HS256', 'kid': _kid(settings)})}.{_segment(_claims(user['id']))}"
        )
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        await _assert_rejected(client, f"{signing_input}.{_b64(mac)}")


async def test_tampered_payload(client: httpx.AsyncClient) -> None:
    await create_user(client, "uma")
    header, payload, signature = (await login(client, "uma"))["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "admin"
    await _assert_rejected(client, f"{header}.{_segment(claims)}.{signature}")


@pytest.mark.parametrize(
    "over",
    [
        {"iss": "someone-else"},
        {"aud": "other-audience"},
        {"exp": None},
        {"sub": None},
        {"role": "root"},
        {"sub": "usr_000000000000000000000000"},  # well signed, but no such user
    ],
)
async def test_bad_claims(
    client: httpx.AsyncClient, settings: AuthSettings, over: dict[str, Any]
) -> None:
    user = await create_user(client, "uma")
    await _assert_rejected(client, _sign(settings, _claims(user["id"], **over)))


async def test_unknown_kid(client: httpx.AsyncClient, settings: AuthSettings) -> None:
    user = await create_user(client, "uma")
    token = _sign(settings, _claims(user["id"]))
    forged_header = _segment({"alg": "EdDSA", "kid": "not-a-key-we-have"})
    await _assert_rejected(client, forged_header + token[token.index(".") :], "unknown key")


async def test_rotation_keeps_old_tokens_valid(make_settings: MakeSettings, tmp_path: Path) -> None:
    old, new = tmp_path / "old.pem", tmp_path / "new.pem"
    async with serve(make_settings(jwt_signing_key_file=old)) as client:
        await create_user(client, "vic")
        old_token = (await login(client, "vic"))["access_token"]

    rotated = make_settings(jwt_signing_key_file=new, jwt_verify_key_files=str(old))
    async with serve(rotated) as client:
        assert (await client.get("/v1/auth/me", headers=bearer(old_token))).status_code == 200
        new_token = (await login(client, "vic"))["access_token"]
        kids = [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]]
        assert kids == [jwt.get_unverified_header(t)["kid"] for t in (new_token, old_token)]

    async with serve(make_settings(jwt_signing_key_file=new)) as client:  # old key retired
        await _assert_rejected(client, old_token, "unknown key")
        assert (await client.get("/v1/auth/me", headers=bearer(new_token))).status_code == 200


async def test_rsa_keys_work_too(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(jwt_signing_key_file=tmp_path / "rsa.pem", jwt_key_algorithm="RS256")
    async with serve(settings) as client:
        await create_user(client, "wes")
        token = (await login(client, "wes"))["access_token"]
        jwks = (await client.get("/.well-known/jwks.json")).json()
        assert (await client.get("/v1/auth/me", headers=bearer(token))).status_code == 200
    assert jwks["keys"][0]["kty"] == "RSA"
    assert jwks["keys"][0]["alg"] == "RS256"
    key = jwt.PyJWKSet.from_dict(jwks).keys[0]
    assert jwt.decode(token, key.key, algorithms=["RS256"], audience="nexus")["username"] == "wes"
    assert (tmp_path / "rsa.pem").stat().st_mode & 0o077 == 0  # private key file is 0600
