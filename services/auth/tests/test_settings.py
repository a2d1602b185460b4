"""Settings: defaults, URL normalisation, and bad values stop the service with one line that
names the variable and never prints a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import SERVICE_DIR, AuthSettings, load_auth_settings


def test_defaults() -> None:
    settings = AuthSettings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.service_name, settings.service_port) == ("auth", 8810)
    assert settings.database_url == f"sqlite+aiosqlite:///{SERVICE_DIR / 'auth.db'}"
    assert settings.jwt_access_ttl_s == 900
    assert settings.nexus_admin_api_key is None
    assert settings.nexus_internal_token is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgresql://u@h:5433/db", "postgresql+asyncpg://u@h:5433/db"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_url_gets_an_async_driver(given: str, expected: str) -> None:
    assert AuthSettings(_env_file=None, database_url=given).database_url == expected  # type: ignore[call-arg]


def test_a_copy_of_env_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text((SERVICE_DIR / ".env.example").read_text())
    monkeypatch.chdir(tmp_path)
    settings = load_auth_settings()
    defaults = AuthSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == defaults.database_url
    assert settings.jwt_signing_key_file == defaults.jwt_signing_key_file
    assert settings.database_schema is None
    assert settings.nexus_admin_api_key is None


def test_blank_secrets_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_ADMIN_API_KEY", "")
    monkeypatch.setenv("NEXUS_INTERNAL_TOKEN", "")
    settings = load_auth_settings(_env_file=None)
    assert settings.nexus_admin_api_key is None
    assert settings.nexus_internal_token is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://root:hunter2-secret@db/auth"),
        ("NEXUS_ADMIN_API_KEY", "hunter2-secret"),
        ("NEXUS_ADMIN_API_KEY", "nx-hunter2-secret"),
        ("NEXUS_INTERNAL_TOKEN", "hunter2-secret"),
        ("NEXUS_INTERNAL_TOKEN", "hunter2 secret with spaces"),
        ("JWT_ACCESS_TTL_S", "hunter2-secret"),
        ("JWT_KEY_ALGORITHM", "HS256"),
        ("DATABASE_SCHEMA", "x; DROP"),
    ],
)
def test_bad_value_names_the_variable_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        load_auth_settings(_env_file=None)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert name in err
    assert "hunter2" not in err
    assert value not in err
