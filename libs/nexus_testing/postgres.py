"""The machine's PostgreSQL in integration tests: its URL, unique names, one-statement admin.

Tests share one server (127.0.0.1:5432, trust auth, database ``test``; ``NEXUS_TEST_POSTGRES_URL``
overrides), so each works in a schema or database of its own, named by ``unique_name`` (a per-
process random part and a counter), and drops it on every exit path.
"""

from __future__ import annotations

import itertools
import os
import secrets

POSTGRES_URL = os.environ.get(
    "NEXUS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
_RUN = secrets.token_hex(4)
_COUNT = itertools.count()


def unique_name(prefix: str) -> str:
    """A schema or database name no other test process uses: ``<prefix>_<run>_<n>``."""
    return f"{prefix}_{_RUN}_{next(_COUNT)}"


async def execute(sql: str) -> None:
    """Run one statement on the test server (asyncpg, imported here: only tests that use
    PostgreSQL need it installed)."""
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
