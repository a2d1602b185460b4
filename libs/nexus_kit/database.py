"""What services with a SQL database share: the ``DATABASE_URL`` rule and engine options.

Pure functions over strings, so the kit needs no database library; a service hands the
results to SQLAlchemy's ``create_async_engine``. SQLite (aiosqlite) and PostgreSQL (asyncpg)
are the two engines Nexus runs on (DESIGN.md "Auth"; the usage service follows it).
"""

from __future__ import annotations

from typing import Any

# DATABASE_SCHEMA: a PostgreSQL schema name, so quoting it in search_path is enough.
SCHEMA_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
# What an operator may write -> the async driver the service runs on.
_ASYNC_SCHEMES = {
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def async_database_url(value: str) -> str:
    """``DATABASE_URL`` with its async driver (``postgres://`` -> ``postgresql+asyncpg://``).

    Raises ``ValueError`` (a settings validation error) for any other scheme; the message
    never repeats the value, which may hold a password.
    """
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in _ASYNC_SCHEMES:
        raise ValueError("must be sqlite+aiosqlite:///<path> or postgresql+asyncpg://user@host/db")
    return f"{_ASYNC_SCHEMES[scheme]}://{rest}"


def engine_options(url: str, schema: str | None) -> dict[str, Any]:
    """Keyword arguments for ``create_async_engine``: SQLite waits up to 15 s for a lock;
    PostgreSQL checks pooled connections before use and, with ``schema``, works in it."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 15}}
    options: dict[str, Any] = {"pool_pre_ping": True}
    if schema:
        options["connect_args"] = {"server_settings": {"search_path": f'"{schema}"'}}
    return options
