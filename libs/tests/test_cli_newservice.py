"""``nexus new-service``: the template copied under a new name and port, bad names refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

from nexus_cli.main import main
from nexus_cli.newservice import SKIP, NewServiceError, create_service

TEMPLATE = Path(__file__).resolve().parents[2] / "services" / "template"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A checkout of our own: the real template, and nothing a developer has running."""
    (tmp_path / "pyproject.toml").write_text("")
    shutil.copytree(TEMPLATE, tmp_path / "services" / "template", ignore=SKIP)
    return tmp_path


def test_copies_template_with_name_and_port(root: Path) -> None:
    (root / "services" / "template" / ".env").write_text("SECRET=do-not-copy\n")
    (root / "services" / "template" / "app" / "__pycache__").mkdir(exist_ok=True)
    created = create_service(root, "acme", 9123)
    target = root / "services" / "acme"
    assert created.directory == target
    assert (target / "app" / "main.py").is_file()
    assert not (target / "app" / "__pycache__").exists()
    for name in (".env.example", ".env"):
        values = dotenv_values(target / name)
        assert (values["SERVICE_NAME"], values["SERVICE_PORT"]) == ("acme", "9123")
        assert "SECRET" not in values  # the template's own .env is never copied
    readme = (target / "README.md").read_text()
    assert readme.startswith("# acme\n")
    assert "--port 9123" in readme
    assert "/services/acme/v1/echo" in readme
    assert 'name = "nexus-acme"' in (target / "pyproject.toml").read_text()
    if (target / "Dockerfile").is_file():
        dockerfile = (target / "Dockerfile").read_text()
        assert "services/template" not in dockerfile
        assert "9123" in dockerfile


def test_default_port_is_the_next_one_nobody_declares(root: Path) -> None:
    assert create_service(root, "one").port == 9001
    assert create_service(root, "two").port == 9002


@pytest.mark.parametrize(
    "name",
    ["", "Acme", "1acme", "ac_me", "acme-", "-acme", "ac--me", "ac me", "a/b", "x" * 64],
)
def test_bad_names_refused(root: Path, name: str) -> None:
    with pytest.raises(NewServiceError, match="is not a valid service name"):
        create_service(root, name)
    assert sorted(p.name for p in (root / "services").iterdir()) == ["template"]


@pytest.mark.parametrize(
    ("name", "port", "message"),
    [
        ("template", None, "services/template already exists"),
        ("etcd", None, "reserved by nexus up"),
        ("acme", 9000, "already services/template's port"),
        ("acme", 8800, "reserved for a Nexus component"),
        ("acme", 80, "pick a port from 1024 to 65535"),
    ],
)
def test_existing_name_or_taken_port_refused(
    root: Path, name: str, port: int | None, message: str
) -> None:
    with pytest.raises(NewServiceError, match=message):
        create_service(root, name, port)
    assert not (root / "services" / "acme").exists()


def test_command_line_reports_refusal(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-service", "acme", "--port", "9100", "--root", str(root)]) == 0
    assert "Created services/acme (SERVICE_NAME=acme, SERVICE_PORT=9100)" in capsys.readouterr().out
    assert main(["new-service", "acme", "--root", str(root)]) == 2
    assert (
        capsys.readouterr().err
        == "nexus new-service: services/acme already exists; pick another name\n"
    )


def _settings_seen(directory: Path) -> list[str]:
    """What the new service's own settings say when it is imported the way uvicorn does it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "ETCD_"))}
    code = "from app.main import app; s = app.state.kit.settings; print(s.service_name)"
    code += "; print(s.service_port)"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-2:]


def test_new_service_runs_under_its_name_with_and_without_dotenv(root: Path) -> None:
    target = create_service(root, "acme", 9124).directory
    assert _settings_seen(target) == ["acme", "9124"]
    (target / ".env").unlink()  # a fresh clone: .env is git-ignored
    assert _settings_seen(target) == ["acme", "9124"]


def test_writes_its_own_compose_file_and_includes_it(root: Path) -> None:
    repo = TEMPLATE.parents[1]
    for name in ("docker-compose.template.yml", "docker-compose.yml"):
        shutil.copyfile(repo / name, root / name)
    created = create_service(root, "acme", 9123)
    assert created.compose_file == root / "docker-compose.acme.yml"
    text = created.compose_file.read_text()
    # Its own image (a copy naming nexus/template would overwrite the template's when built),
    # its own Dockerfile and directory, and its port everywhere the template has 9000.
    assert "template" not in text
    assert "9000" not in text
    for expected in (
        "nexus}/acme:", "dockerfile: services/acme/Dockerfile", "SERVICE_DIR: services/acme",
        "SERVICE_NAME: acme", "http://acme:9123", "${ACME_HOST_PORT:-9123}:9123",
        "http://127.0.0.1:9123/health",
    ):  # fmt: skip
        assert expected in text, expected
    include = (root / "docker-compose.yml").read_text()
    assert include.endswith("\n  - docker-compose.acme.yml\n")  # last in the include list
    assert "docker compose up --build acme" in created.summary()
    with pytest.raises(NewServiceError, match="already exists"):
        create_service(root, "acme", 9124)
