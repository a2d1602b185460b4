"""Rewrite services/gateway/app/openai_operations.json from shared/openai-openapi.yaml.

Run from the repository root: ``.venv/bin/python scripts/vendor_openai_operations.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services" / "gateway"))

from app.apidoc import OPENAI_OPERATIONS, extract_openai_operations  # noqa: E402


def render(spec_file: Path) -> str:
    with spec_file.open("rb") as fh:
        spec = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return json.dumps(extract_openai_operations(spec), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    default = ROOT.parent / "shared" / "openai-openapi.yaml"
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    OPENAI_OPERATIONS.write_text(render(source))
    print(f"wrote {OPENAI_OPERATIONS}")
