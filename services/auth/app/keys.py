"""JWT signing keys: the active key (generated at first start) plus older ones kept for rotation.

The key id (``kid``) is the RFC 7638 thumbprint of the public key, so it is the same on every
replica that shares the key file and across restarts. Rotating: move the old key file aside,
list it (or just its public key) in ``JWT_VERIFY_KEY_FILES``, restart; a new signing key is
generated, tokens signed by the old one keep verifying, and both stay in the JWKS until the old
entry is removed (after the access-token TTL).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

Algorithm = Literal["EdDSA", "RS256"]
PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey
# The members RFC 7638 hashes, per key type.
_THUMBPRINT_MEMBERS = {"OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: Algorithm
    public_key: PublicKey
    private_key: PrivateKey | None = None

    def jwk(self) -> dict[str, Any]:
        """The public JWK, as published in the JWKS."""
        base: dict[str, Any]
        if isinstance(self.public_key, ed25519.Ed25519PublicKey):
            base = dict(OKPAlgorithm.to_jwk(self.public_key, as_dict=True))
        else:
            base = dict(RSAAlgorithm.to_jwk(self.public_key, as_dict=True))
        base.pop("key_ops", None)  # RFC 7517: not together with "use"
        return {**base, "kid": self.kid, "use": "sig", "alg": self.algorithm}


@dataclass(frozen=True)
class KeyRing:
    signing: SigningKey
    by_kid: dict[str, SigningKey]

    def get(self, kid: str) -> SigningKey | None:
        return self.by_kid.get(kid)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        return {"keys": [key.jwk() for key in self.by_kid.values()]}


def load_keyring(signing_file: Path, verify_files: Sequence[Path], generate: Algorithm) -> KeyRing:
    """Blocking (file I/O, maybe key generation): call it from a worker thread."""
    signing = _as_signing_key(_load_or_generate(signing_file, generate))
    if signing.private_key is None:
        raise ValueError(f"{signing_file}: the signing key file must hold a private key")
    by_kid = {signing.kid: signing}
    for path in verify_files:
        key = _as_signing_key(_load_pem(path.read_bytes(), path))
        by_kid.setdefault(key.kid, key)
    return KeyRing(signing, by_kid)


def _load_or_generate(path: Path, algorithm: Algorithm) -> PrivateKey | PublicKey:
    try:
        return _load_pem(path.read_bytes(), path)
    except FileNotFoundError:
        pass
    key: PrivateKey = (
        ed25519.Ed25519PrivateKey.generate()
        if algorithm == "EdDSA"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: when replicas start together on a shared volume, one key wins for all.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _load_pem(path.read_bytes(), path)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return key


def _load_pem(data: bytes, path: Path) -> PrivateKey | PublicKey:
    loaded: Any
    if b"PRIVATE KEY" in data:
        loaded = serialization.load_pem_private_key(data, password=None)
    else:
        loaded = serialization.load_pem_public_key(data)
    if not isinstance(loaded, PrivateKey | PublicKey):
        raise ValueError(f"{path}: only Ed25519 and RSA keys are supported")
    return loaded


def _as_signing_key(key: PrivateKey | PublicKey) -> SigningKey:
    if isinstance(key, PrivateKey):
        private: PrivateKey | None = key
        public = key.public_key()
    else:
        private, public = None, key
    algorithm: Algorithm = "EdDSA" if isinstance(public, ed25519.Ed25519PublicKey) else "RS256"
    probe = SigningKey("", algorithm, public)
    return SigningKey(_thumbprint(probe.jwk()), algorithm, public, private)


def _thumbprint(jwk: dict[str, Any]) -> str:
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
