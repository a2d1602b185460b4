"""Write the metadata JSON Schema (from the pydantic models) into SERVICE_API_SPECIFICATION.md."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from nexus_kit.metadata import metadata_json_schema

SPEC = Path(__file__).resolve().parents[1] / "SERVICE_API_SPECIFICATION.md"
BLOCK = re.compile(
    r"(<!-- metadata-schema:begin -->\n```json\n)(.*?)(```\n<!-- metadata-schema:end -->)", re.S
)


def rendered_schema() -> str:
    return json.dumps(metadata_json_schema(), indent=2, sort_keys=True) + "\n"


def embedded_schema(text: str) -> str:
    match = BLOCK.search(text)
    if not match:
        raise SystemExit("SERVICE_API_SPECIFICATION.md has no metadata-schema block")
    return match.group(2)


def main() -> int:
    text = SPEC.read_text()
    embedded_schema(text)
    SPEC.write_text(BLOCK.sub(lambda m: m.group(1) + rendered_schema() + m.group(3), text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
