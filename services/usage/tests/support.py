"""Records and headers the tests build."""

from __future__ import annotations

import itertools
from typing import Any

from .conftest import INTERNAL_TOKEN

INGEST = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
ADMIN = {"x-nexus-subject": "usr_admin", "x-nexus-role": "admin"}
ALICE = {"x-nexus-subject": "usr_alice", "x-nexus-role": "user"}
BOB = {"x-nexus-subject": "usr_bob", "x-nexus-role": "user"}
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
_IDS = itertools.count()


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": f"rec-{next(_IDS)}",
        "request_id": "req",
        "created_at": T0 + 10,
        "key_id": "key_alice",
        "subject": "usr_alice",
        "endpoint": "/v1/chat/completions",
        "kind": "completions",
        "model": "m1",
        "status": 200,
        "outcome": "ok",
        "input_tokens": 10,
        "output_tokens": 5,
        "duration_ms": 12,
        "streamed": False,
    }
    base.update(fields)
    return base
