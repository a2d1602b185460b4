"""Configuration stays documented: settings ⇄ .env.example, and deploy files set only real knobs.

Each service's settings are introspected in a subprocess from its own directory (every
service's package is ``app``): the variables its settings classes read, base fields included.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    COMPONENT_FILES,
    ROOT,
    documented_keys,
    environment_of,
    example_env,
    load_compose,
    parse_dockerfile,
    runnable_services,
    settings_variables,
)

# Fields that are not an env variable of their own name, and variables read outside the
# settings fields; each with the reason.
NOT_VARIABLES = {
    # Filled from every <NAME>_BASE_URL by settings.static_backends_from, never set as JSON.
    "gateway": {"STATIC_BACKENDS"},
}
READ_BESIDES_FIELDS = {
    # <NAME>_BASE_URL names a static backend (DESIGN.md "Static backends from env");
    # NEXUS_UPSTREAM_KEY_<NAME> is an upstream credential a registration names (docs/upstreams.md).
    "gateway": re.compile(r"^([A-Z][A-Z0-9_]*_BASE_URL|NEXUS_UPSTREAM_KEY_[A-Z0-9_]+)$"),
}
# Specified for a service but not read by it yet, tolerated until it is (then drop the entry).
NOT_READ_YET: set[tuple[str, str]] = set()
# What images and orchestrators set for the runtime, not for the service's settings.
# OTEL_*: read by the OpenTelemetry SDK itself (nexus_kit/tracing.py), not by settings.
RUNTIME_VARIABLES = re.compile(
    r"^(PYTHON[A-Z_]*|PIP_[A-Z_]+|HF_HOME|POD_NAME|POD_IP|OTEL_[A-Z_]+)$"
)

SERVICES = runnable_services()


@pytest.fixture(scope="module")
def variables() -> dict[str, set[str]]:
    return {d.name: settings_variables(d) for d in SERVICES}


def reads(service: str, variable: str, variables: dict[str, set[str]]) -> bool:
    extra = READ_BESIDES_FIELDS.get(service)
    return variable in variables[service] or bool(extra and extra.match(variable))


@pytest.mark.parametrize("service_dir", SERVICES, ids=lambda p: p.name)
def test_env_example_matches_settings(service_dir: Path, variables: dict[str, set[str]]) -> None:
    name = service_dir.name
    example = service_dir / ".env.example"
    assert example.is_file(), f"services/{name}/.env.example is missing"
    documented = documented_keys(example)
    read = variables[name] - NOT_VARIABLES.get(name, set())
    assert sorted(read - documented) == [], f"read by {name}'s settings, not in its .env.example"
    stray = {v for v in documented - read if not reads(name, v, variables)}
    assert sorted(stray) == [], f"in {name}'s .env.example, read by nothing"


def given_env() -> list[tuple[str, str, str]]:
    """``(service, where, variable)`` for every variable a deploy file hands a service."""
    found: list[tuple[str, str, str]] = []
    names = {d.name for d in SERVICES}
    for d in SERVICES:
        dockerfile = d / "Dockerfile"
        if dockerfile.exists():
            found += [(d.name, f"{d.name}/Dockerfile", v) for v in parse_dockerfile(dockerfile).env]
    compose = [(p, ROOT / ".env.example") for p in COMPONENT_FILES]
    for folder in ("compose", "nerdctl"):
        base = ROOT / "deploy" / folder
        compose += [(p, base / ".env.example") for p in sorted(base.glob("*.yml"))]
    for path, env_file in compose:
        env = example_env(env_file, [path])
        for service in load_compose(path, env)["services"].values():
            variables = environment_of(service)
            owner = variables.get("SERVICE_NAME")
            if owner in names:
                found += [(owner, path.name, v) for v in variables]
    for path in sorted((ROOT / "deploy" / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for container in containers_of(doc):
                if container["name"] in names:
                    found += [(container["name"], path.name, e["name"]) for e in container["env"]]
    return found


def containers_of(doc: Any) -> list[dict[str, Any]]:
    if not isinstance(doc, dict) or doc.get("kind") not in ("Deployment", "StatefulSet"):
        return []
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    containers: list[dict[str, Any]] = spec.get("containers") or []
    return [c for c in containers if c.get("env")]


def test_deploy_files_only_set_variables_the_service_reads(
    variables: dict[str, set[str]],
) -> None:
    given = given_env()
    assert len({service for service, _, _ in given}) == len(SERVICES)
    unknown = sorted(
        f"{service} ({where}): {variable}"
        for service, where, variable in given
        if not RUNTIME_VARIABLES.match(variable)
        and not reads(service, variable, variables)
        and (service, variable) not in NOT_READ_YET
    )
    assert unknown == [], "set for a service whose settings never read it (typo or rename?)"
