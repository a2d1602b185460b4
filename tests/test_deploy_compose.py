"""The Compose stack: valid against the Compose specification and wired the way DESIGN.md says.

The root docker-compose.yml is merged here as Compose merges it (``include`` + interpolation
from .env.example), since no Docker engine runs on the machines that test it.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    COMPONENT_FILES,
    GPU_COMPONENTS,
    ROOT,
    ROOT_COMPOSE,
    check_jsonschema,
    documented_keys,
    environment_of,
    example_env,
    host_ports,
    load_compose,
    parse_dockerfile,
    read_env_file,
    referenced_variables,
    root_model,
    service_dirs,
)

DEPLOY_FOLDERS = [ROOT / "deploy" / "compose", ROOT / "deploy" / "nerdctl"]
ALL_COMPOSE_FILES = [
    ROOT_COMPOSE,
    *COMPONENT_FILES,
    *(f for folder in DEPLOY_FOLDERS for f in sorted(folder.glob("*.yml"))),
]
# Variables Compose itself reads from .env rather than interpolating into a file.
COMPOSE_OWN_VARIABLES = {"COMPOSE_PROFILES"}
SECRETS = ("NEXUS_ADMIN_API_KEY", "NEXUS_INTERNAL_TOKEN")
# Keys nerdctl compose does not implement (docs/compose.md of nerdctl): using them there
# would promise something that never happens.
NERDCTL_UNSUPPORTED = {"healthcheck", "profiles", "depends_on", "stop_grace_period", "stop_signal"}


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    merged: dict[str, Any] = root_model()
    return merged


@pytest.fixture(scope="module")
def services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = model["services"]
    return found


def nexus_service_names() -> list[str]:
    return [d.name for d in service_dirs()]


def container_port(name: str) -> int:
    cmd = parse_dockerfile(ROOT / "services" / name / "Dockerfile").cmd
    return int(cmd[cmd.index("--port") + 1])


# --- the specification --------------------------------------------------------------------------


def test_every_compose_file_validates_against_the_compose_spec() -> None:
    assert len(ALL_COMPOSE_FILES) > 8
    assert check_jsonschema(ALL_COMPOSE_FILES) == ""


def test_merged_root_model_validates_against_the_compose_spec(
    model: dict[str, Any], tmp_path: Path
) -> None:
    merged = tmp_path / "merged.yml"
    merged.write_text(yaml.safe_dump(model, sort_keys=False))
    assert check_jsonschema([merged]) == ""


def test_root_file_includes_every_component_file() -> None:
    raw = yaml.safe_load(ROOT_COMPOSE.read_text())
    included = {item if isinstance(item, str) else item["path"] for item in raw["include"]}
    assert included == {f.name for f in COMPONENT_FILES}
    assert set(raw) <= {"name", "include"}, "the root file only assembles the components"


# --- what runs -----------------------------------------------------------------------------------


def test_every_component_has_its_file_and_service(services: dict[str, Any]) -> None:
    components = {"etcd", "ollama", *nexus_service_names()}
    assert {f.name for f in COMPONENT_FILES} == {f"docker-compose.{c}.yml" for c in components}
    env = example_env(ROOT / ".env.example", COMPONENT_FILES)
    for component in components:
        own = load_compose(ROOT / f"docker-compose.{component}.yml", env)["services"]
        assert component in own, f"docker-compose.{component}.yml does not define {component}"
    assert components <= set(services)


def test_every_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck") or {}
        test = check.get("test")
        assert test, f"{name} has no healthcheck"
        assert test[0] in ("CMD", "CMD-SHELL"), name
        assert not check.get("disable"), name


def test_no_host_port_is_published_twice(services: dict[str, Any]) -> None:
    # Every profile at once (gpu included): no combination of services can clash.
    ports = Counter(port for service in services.values() for _, port in host_ports(service))
    assert ports, "nothing published"
    assert [port for port, count in ports.items() if count > 1] == []


def test_only_the_gateway_api_listens_beyond_loopback(services: dict[str, Any]) -> None:
    public = {
        name
        for name, service in services.items()
        for ip, _ in host_ports(service)
        if ip not in ("127.0.0.1", "localhost")
    }
    assert public == {"gateway"}


@pytest.mark.parametrize("name", nexus_service_names())
def test_nexus_service_is_wired_to_etcd_under_its_compose_name(
    name: str, services: dict[str, Any]
) -> None:
    service = services[name]
    env = environment_of(service)
    port = container_port(name)
    assert env["SERVICE_NAME"] == name
    assert env["ETCD_ENDPOINTS"] == "http://etcd:2379"
    assert env["SERVICE_ADVERTISE_URL"] == f"http://{name}:{port}"
    assert service["depends_on"]["etcd"]["condition"] == "service_healthy"
    assert "nexus" in service["networks"]
    assert service["build"]["dockerfile"] == f"services/{name}/Dockerfile"
    assert service["build"]["context"] == "."
    dockerfile = parse_dockerfile(ROOT / "services" / name / "Dockerfile")
    assert service["healthcheck"]["test"] == ["CMD", *dockerfile.healthcheck]
    assert port in dockerfile.exposed


def test_extra_requirements_name_files_of_the_service(services: dict[str, Any]) -> None:
    for name, service in services.items():
        build = service.get("build") or {}
        extras = str((build.get("args") or {}).get("EXTRA_REQUIREMENTS", "")).split()
        service_dir = ROOT / Path(build.get("dockerfile", "x/y")).parent
        for extra in extras:
            assert (service_dir / extra).is_file(), f"{name}: no {service_dir.name}/{extra}"


def test_one_image_name_per_build(services: dict[str, Any]) -> None:
    """Two builds with different args under one tag would overwrite each other's image."""
    builds: dict[str, Any] = {}
    for folder in DEPLOY_FOLDERS:
        env = example_env(folder / ".env.example", sorted(folder.glob("*.yml")))
        for path in sorted(folder.glob("*.yml")):
            for service in load_compose(path, env)["services"].values():
                if "build" in service:
                    known = builds.setdefault(service["image"], service["build"])
                    assert known == service["build"], path.name
    builds.clear()
    for name, service in services.items():
        if "build" in service:
            assert builds.setdefault(service["image"], service["build"]) == service["build"], name


def test_gpu_variants_advertise_their_own_name(services: dict[str, Any]) -> None:
    for name, service in services.items():
        env = environment_of(service)
        if "SERVICE_ADVERTISE_URL" in env:
            assert re.fullmatch(rf"http://{re.escape(name)}:\d+", env["SERVICE_ADVERTISE_URL"])


def test_gateway_reaches_ollama_and_auth(services: dict[str, Any]) -> None:
    gateway = services["gateway"]
    assert environment_of(gateway)["OLLAMA_BASE_URL"] == "http://ollama:11434"
    assert gateway["depends_on"]["auth"]["condition"] == "service_healthy"
    published = {port for _, port in host_ports(gateway)}
    assert {8800, 8801} <= published


def test_image_urls_point_at_the_gateway_prefix(services: dict[str, Any]) -> None:
    gateway_port = min(port for _, port in host_ports(services["gateway"]))
    for name in ("images", "images-gpu"):
        url = environment_of(services[name])["IMAGES_PUBLIC_BASE_URL"]
        assert url == f"http://localhost:{gateway_port}/services/images", name


@pytest.mark.parametrize("component", GPU_COMPONENTS)
def test_gpu_reservations_only_behind_the_gpu_profile(
    component: str, services: dict[str, Any]
) -> None:
    plain, gpu = services[component], services[f"{component}-gpu"]
    assert not plain.get("profiles")
    assert not devices_of(plain)
    assert gpu["profiles"] == ["gpu"]
    assert any("gpu" in d["capabilities"] and d.get("driver") == "nvidia" for d in devices_of(gpu))


def test_without_the_gpu_profile_nothing_reserves_a_device(services: dict[str, Any]) -> None:
    default = {n: s for n, s in services.items() if not s.get("profiles")}
    assert {"etcd", "gateway", "auth", "ollama"} <= set(default)
    assert [n for n, s in default.items() if devices_of(s)] == []


def devices_of(service: dict[str, Any]) -> list[dict[str, Any]]:
    resources = (service.get("deploy") or {}).get("resources") or {}
    found: list[dict[str, Any]] = (resources.get("reservations") or {}).get("devices") or []
    return found


def test_named_volumes_are_declared(model: dict[str, Any]) -> None:
    declared = set(model.get("volumes") or {})
    assert {"etcd-data", "ollama-models", "auth-data"} <= declared
    for name, service in model["services"].items():
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_depends_on_names_existing_services(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown {dependency}"


# --- configuration from .env -------------------------------------------------------------------


def test_secrets_come_from_env_and_are_required() -> None:
    example = (ROOT / ".env.example").read_text()
    for secret in SECRETS:
        assert re.search(rf"^{secret}=$", example, re.M), f"{secret} must ship empty"
    for path in COMPONENT_FILES:
        for service in (yaml.safe_load(path.read_text()).get("services") or {}).values():
            env = service.get("environment") or {}
            for secret in SECRETS:
                if secret in env:
                    assert str(env[secret]).startswith(f"${{{secret}:?"), f"{path.name}: {secret}"


def test_root_env_example_documents_every_variable() -> None:
    stack = [ROOT_COMPOSE, *COMPONENT_FILES]
    used = set().union(*(referenced_variables(p.read_text()) for p in stack))
    documented = documented_keys(ROOT / ".env.example")
    assert sorted(used - documented) == [], "used in compose files, missing from .env.example"
    assert sorted(documented - used - COMPOSE_OWN_VARIABLES) == [], "documented but unused"


# --- deploy/compose and deploy/nerdctl: one service per host -------------------------------------


@pytest.mark.parametrize("folder", DEPLOY_FOLDERS, ids=lambda p: p.name)
def test_deploy_env_example_documents_every_variable(folder: Path) -> None:
    used = set().union(*(referenced_variables(p.read_text()) for p in folder.glob("*.yml")))
    documented = documented_keys(folder / ".env.example")
    assert sorted(used - documented) == []
    assert sorted(documented - used) == []


@pytest.mark.parametrize("folder", DEPLOY_FOLDERS, ids=lambda p: p.name)
def test_deploy_files_run_one_service_against_the_shared_etcd(folder: Path) -> None:
    files = sorted(folder.glob("*.yml"))
    env = example_env(folder / ".env.example", files)
    names = {f.stem for f in files}
    for component in ("etcd", "ollama", *nexus_service_names()):
        assert component in names, f"{folder.name}: no {component}.yml"
    for component in GPU_COMPONENTS:
        assert f"{component}-gpu" in names, f"{folder.name}: no {component}-gpu.yml"
    for path in files:
        services = load_compose(path, env)["services"]
        assert len(services) == 1, f"{path.name}: one service per file"
        ((name, service),) = services.items()
        assert path.stem.removesuffix("-gpu") == name
        if path.stem.endswith("-gpu"):
            assert devices_of(service), f"{path.name} reserves no GPU"
        environment = environment_of(service)
        if "SERVICE_NAME" in environment:
            port = container_port(name)
            published = host_ports(service)[0][1]
            assert environment["ETCD_ENDPOINTS"] == env["ETCD_ENDPOINTS"]
            advertised = f"http://{env['NEXUS_ADVERTISE_HOST']}:{published}"
            assert environment["SERVICE_ADVERTISE_URL"] == advertised, path.name
            assert f"{published}:{port}" in str(service["ports"][0])
        extras = str(((service.get("build") or {}).get("args") or {}).get("EXTRA_REQUIREMENTS", ""))
        for extra in extras.split():
            assert (ROOT / "services" / name / extra).is_file(), f"{path.name}: no {extra}"
        if folder.name == "nerdctl":
            assert sorted(NERDCTL_UNSUPPORTED & set(service)) == [], path.name
        else:
            assert service["healthcheck"]["test"][0] == "CMD", path.name


# --- deploy/compose and deploy/nerdctl keep parity with the root stack ------------------------

TRACING = "OTEL_EXPORTER_OTLP_ENDPOINT"


def raw_services(path: Path) -> dict[str, dict[str, Any]]:
    """A file's services as written (``${...}`` not interpolated), to compare expressions."""
    found: dict[str, dict[str, Any]] = yaml.safe_load(path.read_text())["services"]
    return found


def test_root_files_pass_the_otlp_endpoint_to_every_nexus_service() -> None:
    passed = {}
    for path in COMPONENT_FILES:
        for service in raw_services(path).values():
            environment = environment_of(service)
            if "SERVICE_NAME" in environment:
                passed[environment["SERVICE_NAME"]] = environment.get(TRACING)
    assert set(passed) >= set(nexus_service_names())
    assert set(passed.values()) == {"${OTEL_EXPORTER_OTLP_ENDPOINT:-}"}, passed  # empty = off


@pytest.mark.parametrize("folder", DEPLOY_FOLDERS, ids=lambda p: p.name)
def test_deploy_files_pass_the_otlp_endpoint_like_the_root_files(folder: Path) -> None:
    root = {
        environment_of(s)["SERVICE_NAME"]: environment_of(s).get(TRACING)
        for path in COMPONENT_FILES
        for s in raw_services(path).values()
        if "SERVICE_NAME" in environment_of(s)
    }
    checked = []
    for path in sorted(folder.glob("*.yml")):
        for service in raw_services(path).values():
            environment = environment_of(service)
            name = environment.get("SERVICE_NAME")
            if name is None:
                continue
            assert environment.get(TRACING) == root[name], f"{folder.name}/{path.name}"
            checked.append(path.stem)
    assert set(nexus_service_names()) <= {c.removesuffix("-gpu") for c in checked}
    assert read_env_file(folder / ".env.example")[TRACING] == ""  # off unless a collector is set


@pytest.mark.parametrize("folder", DEPLOY_FOLDERS, ids=lambda p: p.name)
def test_deploy_gateway_sets_the_os_limits_of_the_root_gateway(folder: Path) -> None:
    root = raw_services(ROOT / "docker-compose.gateway.yml")["gateway"]
    (deployed,) = raw_services(folder / "gateway.yml").values()
    assert root["ulimits"]["nofile"]["soft"] >= 65536
    assert int(root["sysctls"]["net.core.somaxconn"]) >= 4096
    assert deployed["ulimits"] == root["ulimits"]
    assert deployed["sysctls"] == root["sysctls"]
