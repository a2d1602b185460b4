"""The pieces of ``nexus up`` that need no process: service selection, ports, env, secrets,
output formatting and argument handling."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from nexus_cli.devkeys import load_dev_secrets
from nexus_cli.etcd import EtcdConfig
from nexus_cli.main import build_parser, find_root, main
from nexus_cli.output import Output, format_table
from nexus_cli.services import ServiceProblem, load_spec, port_variable, select
from nexus_cli.stack import gateway_url, service_env


def make_service(root: Path, key: str, example: str = "", env: str | None = None) -> Path:
    directory = root / "services" / key
    (directory / "app").mkdir(parents=True)
    (directory / "app" / "main.py").write_text("app = None\n")
    (directory / ".env.example").write_text(example)
    if env is not None:
        (directory / ".env").write_text(env)
    return directory


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "services").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    return tmp_path


def test_port_variable_is_an_env_name() -> None:
    assert port_variable("template") == "TEMPLATE_PORT"
    assert port_variable("my-svc") == "MY_SVC_PORT"


def test_port_env_beats_dotenv_beats_example(root: Path) -> None:
    directory = make_service(root, "acme", "SERVICE_PORT=9100\n", env="SERVICE_PORT=9200\n")
    assert load_spec(directory, {}).port == 9200
    assert load_spec(directory, {"ACME_PORT": "9300"}).port == 9300
    (directory / ".env").unlink()
    assert load_spec(directory, {}).port == 9100


def test_service_name_from_env_files_else_directory(root: Path) -> None:
    named = make_service(root, "one", "SERVICE_NAME=uno\nSERVICE_PORT=9100\n")
    blank = make_service(root, "two", "SERVICE_NAME=\nSERVICE_PORT=9101\n")
    assert load_spec(named, {}).service_name == "uno"
    assert load_spec(blank, {}).service_name == "two"


@pytest.mark.parametrize(
    ("example", "environ", "message"),
    [
        ("", {}, "no SERVICE_PORT in services/acme/.env or .env.example; set ACME_PORT"),
        ("SERVICE_PORT=nine\n", {}, "SERVICE_PORT in services/acme/.env*='nine' is not a port"),
        ("SERVICE_PORT=9100\n", {"ACME_PORT": "70000"}, "ACME_PORT='70000' is not a port"),
    ],
)
def test_bad_or_missing_port_is_one_clear_line(
    root: Path, example: str, environ: dict[str, str], message: str
) -> None:
    directory = make_service(root, "acme", example)
    with pytest.raises(ServiceProblem, match=r"^acme: ") as caught:
        load_spec(directory, environ)
    assert message in str(caught.value)


def test_select_runs_only_dirs_with_app_main(root: Path) -> None:
    make_service(root, "beta", "SERVICE_PORT=9101\n")
    make_service(root, "alpha", "SERVICE_PORT=9100\n")
    (root / "services" / "ollama").mkdir()  # configuration only: silently not a service
    specs, problems = select(root, None, {})
    assert [s.key for s in specs] == ["alpha", "beta"]
    assert problems == []


def test_select_only_reports_unknown_unready_and_clashing(root: Path) -> None:
    make_service(root, "alpha", "SERVICE_PORT=9100\n")
    make_service(root, "beta", "SERVICE_PORT=9100\n")
    (root / "services" / "gateway").mkdir()
    only = ["alpha", "alpha", "beta", "gateway", "nope", "../services"]
    specs, problems = select(root, only, {})
    assert [s.key for s in specs] == ["alpha"]
    assert problems == [
        "nope: no such service under services/ (known: alpha, beta)",
        "../services: no such service under services/ (known: alpha, beta)",
        "beta: port 9100 is also alpha's; not started"
        " (set BETA_PORT or SERVICE_PORT in services/beta/.env)",
        "gateway: services/gateway/app/main.py does not exist (yet); skipped",
    ]


def test_service_env(root: Path) -> None:
    from nexus_cli.devkeys import DevSecrets

    images = load_spec(make_service(root, "images", "SERVICE_PORT=7860\n"), {})
    secrets = DevSecrets("nx-admin", "test", "internal")
    caller = {"PATH": "/bin", "SERVICE_INSTANCE_ID": "shared", "SERVICE_NAME": "x"}
    env = service_env(images, caller, "http://127.0.0.1:1", secrets, "http://127.0.0.1:8800")
    assert "SERVICE_INSTANCE_ID" not in env  # per service, never inherited
    assert env["PATH"] == "/bin"
    assert env["SERVICE_NAME"] == "images"
    assert env["SERVICE_PORT"] == "7860"
    assert env["ETCD_ENDPOINTS"] == "http://127.0.0.1:1"
    assert env["NEXUS_ADMIN_API_KEY"] == "nx-admin"
    assert env["NEXUS_INTERNAL_TOKEN"] == "internal"
    assert env["IMAGES_PUBLIC_BASE_URL"] == "http://127.0.0.1:8800/services/images"
    own = {**caller, "IMAGES_PUBLIC_BASE_URL": "https://img.example"}
    env = service_env(images, own, "http://127.0.0.1:1", secrets, "http://127.0.0.1:8800")
    assert env["IMAGES_PUBLIC_BASE_URL"] == "https://img.example"


def test_the_gateway_spools_usage_in_the_stacks_state_folder(root: Path, tmp_path: Path) -> None:
    from nexus_cli.devkeys import DevSecrets

    gateway = load_spec(make_service(root, "gateway", "SERVICE_PORT=8800\n"), {})
    secrets = DevSecrets("nx-admin", "test", "internal")
    args = ("http://127.0.0.1:1", secrets, "http://127.0.0.1:8800", tmp_path)
    assert service_env(gateway, {}, *args)["USAGE_SPOOL_DIR"] == str(tmp_path / "usage-spool")
    own = {"USAGE_SPOOL_DIR": "/srv/spool"}
    assert service_env(gateway, own, *args)["USAGE_SPOOL_DIR"] == "/srv/spool"


def test_known_component_without_port_in_env_files_gets_design_port(root: Path) -> None:
    assert load_spec(make_service(root, "gateway"), {}).port == 8800


def test_gateway_url_follows_its_port_rule(root: Path) -> None:
    assert gateway_url(root, {}) == "http://127.0.0.1:8800"  # not written yet: the default
    make_service(root, "gateway", "SERVICE_PORT=8800\n")
    assert gateway_url(root, {"GATEWAY_PORT": "18800"}) == "http://127.0.0.1:18800"


def test_dev_secrets_generated_once_private_and_reused(tmp_path: Path) -> None:
    state = tmp_path / ".nexus"
    first = load_dev_secrets(state, {})
    assert first.admin_key.startswith("nx-")
    assert first.admin_key_source == str(state / "dev-admin-key")
    for name in ("dev-admin-key", "internal-token"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
    assert load_dev_secrets(state, {}) == first


def test_dev_secrets_from_environment_win_and_the_key_file_holds_them(tmp_path: Path) -> None:
    state = tmp_path / ".nexus"
    environ = {"NEXUS_ADMIN_API_KEY": "nx-mine", "NEXUS_INTERNAL_TOKEN": "tok"}
    secrets = load_dev_secrets(state, environ)
    assert (secrets.admin_key, secrets.internal_token) == ("nx-mine", "tok")
    assert "environment" in secrets.admin_key_source
    assert not secrets.admin_key_generated  # never printed
    # The README's `export OPENAI_API_KEY=$(cat .nexus/dev-admin-key)` works this way too.
    key_file = state / "dev-admin-key"
    assert key_file.read_text().strip() == "nx-mine"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (state / "internal-token").exists()


def test_a_generated_key_is_replaced_by_the_environment_and_not_reused_after(
    tmp_path: Path,
) -> None:
    state = tmp_path / ".nexus"
    generated = load_dev_secrets(state, {})
    assert generated.admin_key_generated
    assert load_dev_secrets(state, {"NEXUS_ADMIN_API_KEY": "nx-op"}).admin_key == "nx-op"
    # The variable is gone: the operator's key is not taken for a generated one (and shown).
    after = load_dev_secrets(state, {})
    assert after.admin_key_generated
    assert after.admin_key not in ("nx-op", generated.admin_key)
    assert (state / "dev-admin-key").read_text().strip() == after.admin_key
    assert load_dev_secrets(state, {}).admin_key == after.admin_key  # and kept from then on


def test_etcd_config_ports_from_env(tmp_path: Path) -> None:
    default = EtcdConfig.from_env({}, tmp_path)
    assert (default.endpoint, default.peer_port) == ("http://127.0.0.1:2379", 2380)
    assert default.data_dir == tmp_path / "etcd"
    moved = EtcdConfig.from_env({"NEXUS_ETCD_PORT": "12379", "NEXUS_ETCD_PEER_PORT": "1"}, tmp_path)
    assert moved.endpoint == "http://127.0.0.1:12379"
    assert "http://127.0.0.1:1" in moved.argv("etcd")
    with pytest.raises(ValueError, match="NEXUS_ETCD_PORT='x'"):
        EtcdConfig.from_env({"NEXUS_ETCD_PORT": "x"}, tmp_path)


def test_plain_output_pads_names_and_has_no_colour() -> None:
    stream = io.StringIO()  # not a terminal
    out = Output(stream)
    out.register(["etcd", "template"])
    out.log("etcd", "hello")
    out.notice("note")
    assert stream.getvalue() == "etcd     | hello\nnexus    | note\n"


def test_colour_output_paints_prefix_and_state() -> None:
    stream = io.StringIO()
    out = Output(stream, colour=True)
    out.register(["gateway"])
    out.log("gateway", "up")
    out.table([("gateway", "http://127.0.0.1:8800", "ready")])
    text = stream.getvalue()
    assert text.startswith("\x1b[36mgateway |\x1b[0m up\n")
    assert "\x1b[32mready\x1b[0m" in text


def test_table_aligns_columns() -> None:
    rows = [("etcd", "http://127.0.0.1:2379", "ready"), ("gw", "http://x", "port 1 in use")]
    assert format_table(("NAME", "URL", "STATE"), rows) == [
        "NAME  URL                    STATE",
        "etcd  http://127.0.0.1:2379  ready",
        "gw    http://x               port 1 in use",
    ]


def test_output_survives_a_closed_reader() -> None:
    class Gone(io.StringIO):
        def write(self, _: str) -> int:
            raise BrokenPipeError

    Output(Gone()).notice("nobody listens")  # no exception: the stack keeps running


def test_find_root_from_a_nested_folder(root: Path) -> None:
    nested = make_service(root, "alpha", "SERVICE_PORT=9100\n") / "app"
    assert find_root(nested) == root


def test_root_that_is_not_a_checkout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="is not a Nexus checkout"):
        main(["up", "--root", str(tmp_path)])


def test_up_arguments() -> None:
    args = build_parser().parse_args(["up", "--only", "a, b", "--ready-timeout", "5"])
    assert (args.only, args.ready_timeout) == (["a", "b"], 5.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--ready-timeout", "0"])
