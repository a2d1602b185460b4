"""The pieces of ``make compose-test`` that run without Docker: the fake Ollama speaks
Ollama's wire format, the README recipe it runs is there and works, the package index."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from nexus_testing import free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import compose_test  # noqa: E402

FAKE = ROOT / "tests" / "compose" / "fake-ollama" / "fake_ollama.py"


@pytest.fixture(scope="module")
def ollama() -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}"}
    proc = subprocess.Popen([sys.executable, FAKE, "serve"], env=env, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/api/version")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_fake_ollama_lists_models_and_answers_like_ollama(ollama: str) -> None:
    assert httpx.get(f"{ollama}/api/version").json() == {"version": "0.13.5"}
    tags = httpx.get(f"{ollama}/api/tags").json()["models"]
    assert tags[0]["name"] == "llama3.2:latest"
    assert {"model", "modified_at", "size", "digest", "details"} <= tags[0].keys()
    with openai.OpenAI(base_url=f"{ollama}/v1", api_key="ollama", max_retries=0) as client:
        done = client.chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "hi there"}]
        )
        assert done.choices[0].message.content == "echo: hi there"
        stream = client.chat.completions.create(
            model="llama3.2:latest", messages=[{"role": "user", "content": "a b c"}], stream=True
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: a b c"
        assert chunks[-1].choices[0].finish_reason == "stop"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="nope", messages=[{"role": "user", "content": "x"}]
            )


def test_fake_ollama_list_command_is_the_healthcheck(ollama: str) -> None:
    env = {**os.environ, "OLLAMA_HOST": f"0.0.0.0:{ollama.rsplit(':', 1)[1]}"}
    done = subprocess.run([sys.executable, FAKE, "list"], env=env, capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "llama3.2:latest" in done.stdout
    env["OLLAMA_HOST"] = f"0.0.0.0:{free_port()}"  # nothing there: unhealthy
    down = subprocess.run([sys.executable, FAKE, "list"], env=env, capture_output=True,
                          timeout=30, check=False)  # fmt: skip
    assert down.returncode == 1


def test_readme_recipe_adds_a_service_with_its_own_image_and_port(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "services" / "template", tmp_path / "services" / "template",
                    ignore=shutil.ignore_patterns("__pycache__", ".env", ".venv"))  # fmt: skip
    for name in ("docker-compose.yml", "docker-compose.template.yml"):
        shutil.copyfile(ROOT / name, tmp_path / name)
    recipe = compose_test.readme_recipe("beta", 9200)
    subprocess.run(["bash", "-euo", "pipefail", "-c", recipe], cwd=tmp_path, check=True,
                   timeout=60)  # fmt: skip
    compose = (tmp_path / "docker-compose.beta.yml").read_text()
    assert "template" not in compose
    assert "9000" not in compose
    assert "nexus}/beta:" in compose
    assert "${BETA_HOST_PORT:-9200}:9200" in compose
    dockerfile = (tmp_path / "services" / "beta" / "Dockerfile").read_text()
    assert "services/template" not in dockerfile
    assert '"--port", "9200"]' in dockerfile
    assert "EXPOSE 9200" in dockerfile
    settings = (tmp_path / "services" / "beta" / "app" / "settings.py").read_text()
    assert 'service_name: str = "beta"' in settings
    assert "service_port: int = 9200" in settings
    assert (tmp_path / "docker-compose.yml").read_text().endswith("- docker-compose.beta.yml\n")


def test_simple_index_links_every_wheel(tmp_path: Path) -> None:
    house = tmp_path / "house"
    house.mkdir()
    for wheel in ("Foo_Bar-1.0-py3-none-any.whl", "foo_bar-1.1-py3-none-any.whl",
                  "zeta-2.0-cp311-cp311-manylinux_2_17_x86_64.whl"):  # fmt: skip
        (house / wheel).write_bytes(b"")
    index = compose_test.simple_index(house, tmp_path / "index")
    page = (index / "simple" / "foo-bar" / "index.html").read_text()
    assert 'href="/files/Foo_Bar-1.0-py3-none-any.whl"' in page
    assert 'href="/files/foo_bar-1.1-py3-none-any.whl"' in page
    assert (index / "simple" / "zeta" / "index.html").is_file()
    assert (index / "files").resolve() == house.resolve()


def test_without_root_it_skips_unless_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compose_test.os, "geteuid", lambda: 1000)
    with pytest.raises(compose_test.Skip, match="needs root"):
        compose_test.prerequisites()
