"""Rewrite libs/nexus_testing/openai_schemas.json from shared/openai-openapi.yaml."""

from __future__ import annotations

import json

from nexus_testing.openai_schema import VENDORED, extract, load_source_components

if __name__ == "__main__":
    subset = extract(load_source_components())
    VENDORED.write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(subset['schemas'])} schemas to {VENDORED}")
