"""The shared DATABASE_URL rule and engine options (nexus_kit.database)."""

from __future__ import annotations

import re

import pytest

from nexus_kit.database import SCHEMA_PATTERN, async_database_url, engine_options


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:pw@db/x", "postgresql+asyncpg://u:pw@db/x"),
        ("postgresql://u@db/x", "postgresql+asyncpg://u@db/x"),
        ("postgresql+asyncpg://u@db/x", "postgresql+asyncpg://u@db/x"),
        ("sqlite+aiosqlite:////data/a.db", "sqlite+aiosqlite:////data/a.db"),
    ],
)
def test_every_accepted_url_gets_its_async_driver(given: str, expected: str) -> None:
    assert async_database_url(given) == expected


@pytest.mark.parametrize("given", ["mysql://u:secret@db/x", "sqlite:///a.db", "no-scheme"])
def test_other_urls_are_refused_without_repeating_them(given: str) -> None:
    with pytest.raises(ValueError, match="must be sqlite") as caught:
        async_database_url(given)
    assert "secret" not in str(caught.value)


def test_engine_options_per_engine() -> None:
    sqlite = engine_options("sqlite+aiosqlite:///a.db", "ignored")
    assert sqlite == {"connect_args": {"timeout": 15}}
    assert engine_options("postgresql+asyncpg://u@db/x", None) == {"pool_pre_ping": True}
    with_schema = engine_options("postgresql+asyncpg://u@db/x", "usage")
    assert with_schema["connect_args"] == {"server_settings": {"search_path": '"usage"'}}
    assert re.match(SCHEMA_PATTERN, "usage_2")
    assert not re.match(SCHEMA_PATTERN, 'x"; drop')
