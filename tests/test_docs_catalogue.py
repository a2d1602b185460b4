"""The written docs keep up with the tree: service catalogue, ADRs, a README per deploy folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from deploy_support import ROOT, parse_dockerfile, service_dirs

CATALOGUE = ROOT / "services" / "README.md"
ADR_SECTIONS = ("Context", "Decision", "Consequences", "Alternatives")


def catalogue_rows() -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in CATALOGUE.read_text().splitlines():
        match = re.match(r"^\| \[([a-z0-9-]+)\]\(\1/\) \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


@pytest.mark.parametrize("service", service_dirs(), ids=lambda p: p.name)
def test_catalogue_lists_each_service_with_its_port(service: Path) -> None:
    row = catalogue_rows().get(service.name)
    assert row is not None, f"services/README.md has no row for {service.name}"
    cmd = parse_dockerfile(service / "Dockerfile").cmd
    port = cmd[cmd.index("--port") + 1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 6, row
    assert cells[2].startswith(port), f"{service.name}: port {port} not in {cells[2]!r}"
    assert all(cells), f"{service.name}: an empty cell"


def test_catalogue_has_no_row_for_a_missing_service() -> None:
    present = {p.name for p in (ROOT / "services").iterdir() if p.is_dir()}
    assert sorted(set(catalogue_rows()) - present) == []


def test_ollama_directory_is_configuration_only() -> None:
    files = {p.name for p in (ROOT / "services" / "ollama").iterdir()}
    assert files == {"README.md", ".env.example"}


@pytest.mark.parametrize("number", ["0002", "0003", "0004"])
def test_adr_has_every_section(number: str) -> None:
    (path,) = (ROOT / "docs" / "adr").glob(f"{number}-*.md")
    text = path.read_text()
    assert text.startswith(f"# {number} ")
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    titles = [s.split("\n", 1)[0].strip() for s in sections]
    assert titles == list(ADR_SECTIONS), path.name
    for section in sections:
        body = section.split("\n", 1)[1].strip()
        assert len(body) > 200, f"{path.name}: {section.splitlines()[0]} is not a paragraph"


@pytest.mark.parametrize("folder", ["deploy", "deploy/compose", "deploy/nerdctl", "deploy/k8s"])
def test_each_deploy_folder_has_a_readme(folder: str) -> None:
    readme = ROOT / folder / "README.md"
    assert readme.is_file()
    assert len(readme.read_text()) > 500
