"""deploy/k8s renders with kustomize (kubectl's built-in one) and validates against the API."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import GPU_COMPONENTS, ROOT, VENV_BIN, service_dirs

from nexus_kit.settings import ServiceSettings

K8S = ROOT / "deploy" / "k8s"
TARGETS = [K8S, K8S / "overlays" / "cpu-only"]
SECRETS = {"NEXUS_ADMIN_API_KEY", "NEXUS_INTERNAL_TOKEN"}
Manifests = dict[tuple[str, str], dict[str, Any]]


def render(target: Path) -> str:
    proc = subprocess.run(
        [str(VENV_BIN / "kubectl"), "kustomize", str(target)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module", params=TARGETS, ids=["default", "cpu-only"])
def rendered(request: pytest.FixtureRequest) -> str:
    return render(request.param)


@pytest.fixture(scope="module")
def manifests(rendered: str) -> Manifests:
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.fixture(scope="module")
def default() -> Manifests:
    docs = [d for d in yaml.safe_load_all(render(K8S)) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_every_manifest_validates(rendered: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("k8s") / "rendered.yaml"
    path.write_text(rendered)
    proc = subprocess.run(
        [str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", str(path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_everything_lands_in_the_nexus_namespace(manifests: Manifests) -> None:
    assert ("Namespace", "nexus") in manifests
    for (kind, name), doc in manifests.items():
        if kind != "Namespace":
            assert doc["metadata"].get("namespace") == "nexus", f"{kind}/{name}"


def test_etcd_is_a_three_member_statefulset_behind_a_headless_service(
    manifests: Manifests,
) -> None:
    etcd = manifests[("StatefulSet", "etcd")]["spec"]
    assert etcd["replicas"] == 3
    assert etcd["template"]["spec"]["enableServiceLinks"] is False  # etcd reads ETCD_* vars
    headless = manifests[("Service", etcd["serviceName"])]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    args = " ".join(etcd["template"]["spec"]["containers"][0]["command"])
    assert all(f"etcd-{i}=http://etcd-{i}.{etcd['serviceName']}" in args for i in range(3))
    assert ("Service", "etcd") in manifests


def component_names() -> list[str]:
    return [*(d.name for d in service_dirs()), "ollama"]


@pytest.mark.parametrize("name", component_names())
def test_each_component_has_a_deployment_and_service(name: str, manifests: Manifests) -> None:
    deployment = manifests[("Deployment", name)]
    service = manifests[("Service", name)]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    pod = deployment["spec"]["template"]["spec"]
    # Kubernetes' docker-link variables (ETCD_PORT=tcp://...) would reach the settings.
    assert pod["enableServiceLinks"] is False
    container = pod["containers"][0]
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    if name == "ollama":
        return
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in container["env"]}
    assert env["SERVICE_NAME"]["value"] == name
    assert env["ETCD_ENDPOINTS"]["value"] == "http://etcd:2379"
    assert env["SERVICE_ADVERTISE_URL"]["value"].startswith("http://$(POD_IP):")
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0


@pytest.mark.parametrize("name", GPU_COMPONENTS)
def test_gpu_components_ask_for_a_gpu_by_default(name: str, default: Manifests) -> None:
    container = default[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_cpu_only_overlay_asks_for_no_gpu() -> None:
    rendered = render(K8S / "overlays" / "cpu-only")
    assert "nvidia.com/gpu:" not in rendered.replace("key: nvidia.com/gpu", "")


def test_gateway_scales_horizontally(manifests: Manifests) -> None:
    hpa = manifests[("HorizontalPodAutoscaler", "gateway")]["spec"]
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert hpa["scaleTargetRef"] == target
    assert hpa["minReplicas"] >= 2
    assert hpa["maxReplicas"] > hpa["minReplicas"]


def test_keys_come_from_a_secret(manifests: Manifests) -> None:
    secrets = [doc for (kind, _), doc in manifests.items() if kind == "Secret"]
    assert len(secrets) == 1
    assert SECRETS <= set(secrets[0]["data"])
    secret_name = secrets[0]["metadata"]["name"]
    for (kind, name), doc in manifests.items():
        if kind != "Deployment":
            continue
        for env in doc["spec"]["template"]["spec"]["containers"][0].get("env", []):
            if env["name"] in SECRETS:
                ref = env["valueFrom"]["secretKeyRef"]
                assert ref == {"name": secret_name, "key": env["name"]}, name


def test_the_readme_secret_overlay_replaces_the_placeholders(tmp_path: Path) -> None:
    overlay = tmp_path / "my-nexus"
    overlay.mkdir()
    (overlay / "secrets.env").write_text(
        "NEXUS_ADMIN_API_KEY=nx-abcdefghijklmnopqrstuvwxyz\nNEXUS_INTERNAL_TOKEN=0123456789abcdef\n"
    )
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(K8S, overlay)}]\n"
        "secretGenerator:\n"
        "  - name: nexus-secrets\n"
        "    behavior: replace\n"
        "    envs: [secrets.env]\n"
    )
    docs = [d for d in yaml.safe_load_all(render(overlay)) if d]
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert secret["metadata"]["namespace"] == "nexus"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["NEXUS_INTERNAL_TOKEN"] == "0123456789abcdef"
    names = {
        env["valueFrom"]["secretKeyRef"]["name"]
        for d in docs
        if d["kind"] == "Deployment"
        for env in d["spec"]["template"]["spec"]["containers"][0].get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert names == {secret["metadata"]["name"]}


@pytest.mark.parametrize("name", [d.name for d in service_dirs()])
def test_the_grace_period_covers_the_prestop_window_and_the_drain(
    name: str, manifests: Manifests
) -> None:
    """At SIGTERM readyz answers 503 for PRESTOP_DELAY_S while the pod still serves; the
    readiness probe must fail within that window, and the pod must not be killed before the
    window plus the drain (SHUTDOWN_GRACE_S) are over."""
    pod = manifests[("Deployment", name)]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    fields = ServiceSettings.model_fields
    prestop = float(env.get("PRESTOP_DELAY_S") or fields["prestop_delay_s"].default)
    drain = float(env.get("SHUTDOWN_GRACE_S") or fields["shutdown_grace_s"].default)
    readiness = container["readinessProbe"]
    assert prestop > 0
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= prestop
    assert readiness["timeoutSeconds"] <= readiness["periodSeconds"]
    assert pod["terminationGracePeriodSeconds"] >= prestop + drain + 2
    text = (K8S / "base" / f"{name}.yaml").read_text()
    above = text.split("terminationGracePeriodSeconds")[0].rsplit("enableServiceLinks", 1)[1]
    assert "PRESTOP_DELAY_S" in above  # the comment says why
    assert "SHUTDOWN_GRACE_S" in above
