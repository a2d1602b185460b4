"""docs/api/<service>.json is each app's current OpenAPI document (scripts/export_openapi.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import export_openapi  # noqa: E402

SERVICES = export_openapi.services()
FIX = "regenerate with `.venv/bin/python scripts/export_openapi.py`"


@pytest.mark.parametrize("service_dir", SERVICES, ids=lambda p: p.name)
def test_published_document_is_current(service_dir: Path) -> None:
    path = export_openapi.target(service_dir)
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: {FIX}"
    current = export_openapi.render(export_openapi.openapi_of(service_dir))
    assert path.read_text() == current, f"{path.relative_to(ROOT)} is stale: {FIX}"


def test_no_document_for_a_service_that_is_gone() -> None:
    published = {p.stem for p in export_openapi.API_DOCS.glob("*.json")}
    assert sorted(published - {s.name for s in SERVICES}) == []
