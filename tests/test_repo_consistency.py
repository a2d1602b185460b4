"""Files generated from a single source stay in step with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = sorted(p.parent for p in (ROOT / "services").glob("*/pyproject.toml"))
sys.path.insert(0, str(ROOT / "scripts"))


def test_spec_embeds_current_metadata_schema() -> None:
    import gen_spec

    text = gen_spec.SPEC.read_text()
    assert gen_spec.embedded_schema(text) == gen_spec.rendered_schema(), (
        "SERVICE_API_SPECIFICATION.md is stale: run `.venv/bin/python scripts/gen_spec.py`"
    )


def _pins(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_requirements_match_lock(service: Path) -> None:
    uv = Path(sys.executable).parent / "uv"
    exported = subprocess.run(
        [str(uv), "export", "--frozen", "--package", f"nexus-{service.name}", "--no-hashes",
         "--no-dev", "--no-emit-workspace", "-q"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    committed = (service / "requirements.txt").read_text()
    assert _pins(committed) == _pins(exported), (
        f"services/{service.name}/requirements.txt drifted from uv.lock: run `make requirements`"
    )


def test_vendored_openai_schemas_match_the_published_document() -> None:
    import json

    from nexus_testing.openai_schema import VENDORED, extract, load_source_components, spec_path

    if not spec_path().exists():
        pytest.skip(f"{spec_path()} is not here (a clone without shared/): nothing to compare")
    assert json.loads(VENDORED.read_text()) == extract(load_source_components()), (
        "run `.venv/bin/python scripts/vendor_openai_schemas.py`"
    )
