"""Path handling under hostile encodings (issue #12, fault 3): never a 5xx, never a stray path.

``/services/tem%70late/v1/echo`` used to be cut by the length of the *decoded* prefix from the
*raw* path and went upstream as ``http://host:9000te/v1/echo`` (a 500). The property tests send
raw request targets built from percent-encodings, dot segments and slashes through a real
gateway (uvicorn on loopback) to real upstreams, and check what each upstream received: only
paths it advertises, only when the request named it (or a path it serves).
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from app.main import build_app
from app.paths import upstream_target
from nexus_kit import NexusError
from nexus_testing import UvicornThread, wait_for_http
from tests.support import meta_json, metadata
from tests.support import settings as gateway_settings

ADVERTISED = [("POST", "/v1/echo"), ("GET", "/v1/items/{id}")]


@dataclass
class Recorder:
    """An upstream that advertises ``ADVERTISED`` and records every raw target it gets."""

    name: str
    seen: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = scope["raw_path"].decode("latin-1")
        if scope["path"] == "/v1/metadata":
            body = meta_json(metadata(self.name, ADVERTISED))
            await _reply(send, 200, body)
            return
        with self.lock:
            self.seen.append((scope["method"], raw))
        await _reply(send, 200, {"upstream": self.name})


async def _reply(send: Send, status: int, doc: object) -> None:
    import orjson

    body = orjson.dumps(doc)
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Stack:
    gateway: UvicornThread
    uppers: dict[str, Recorder]

    def send(self, method: str, target: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.gateway.port, timeout=10)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            body = b'{"message":"x"}' if method == "POST" else b""
            conn.putheader("content-type", "application/json")
            conn.putheader("content-length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    uppers = {name: Recorder(name) for name in ("template", "other")}
    servers = {name: UvicornThread(rec) for name, rec in uppers.items()}
    started: list[UvicornThread] = []
    try:
        for server in servers.values():
            started.append(server.start())
        backends = {name: servers[name].url for name in uppers}
        app = build_app(gateway_settings(static_backends=backends))
        gateway = UvicornThread(app)
        started.append(gateway.start())
        wait_for_http(gateway.url + "/readyz", timeout_s=20)
        yield Stack(gateway, uppers)
    finally:
        for server in reversed(started):
            server.stop()


def _advertised(path: str) -> bool:
    parts = path.split("/")
    if path == "/v1/echo":
        return True
    return len(parts) == 4 and parts[:3] == ["", "v1", "items"] and parts[3] not in ("", ".", "..")


@pytest.mark.integration
def test_a_percent_encoded_service_name_is_cut_on_its_raw_form(stack: Stack) -> None:
    for target in ("/services/tem%70late/v1/echo", "/services/%74emplate/v1/echo"):
        before = len(stack.uppers["template"].seen)
        assert stack.send("POST", target) == 200
        assert stack.uppers["template"].seen[before:] == [("POST", "/v1/echo")]


@pytest.mark.integration
def test_dot_segments_and_encoded_slashes_are_unknown_urls(stack: Stack) -> None:
    for target in ("/services/template/v1/items/..", "/services/template/v1/items/%2e%2e",
                   "/v1/items/.", "/services/te%2Fmplate/v1/echo",
                   "/services/template%2Fv1/echo"):  # fmt: skip
        method = "POST" if target.endswith("echo") else "GET"
        assert stack.send(method, target) == 404, target


SEGMENTS = ["services", "template", "other", "tem%70late", "%74emplate", "oth%65r", "v1",
            "v1%2Fecho", "echo", "ech%6F", "items", "x", "a%2Fb", "%2e%2e", "%2E", "..", ".",
            "%2f", "%252e%252e", "%", "%zz", "", "%00", "%C3%A9", "%ff"]  # fmt: skip


@pytest.mark.integration
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST"]),
    segments=st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6),
)
def test_any_encoding_is_never_a_5xx_nor_a_stray_upstream_path(
    stack: Stack, method: str, segments: list[str]
) -> None:
    target = "/" + "/".join(segments)
    before = {name: len(rec.seen) for name, rec in stack.uppers.items()}
    status = stack.send(method, target)
    assert status < 500, (target, status)
    for name, rec in stack.uppers.items():
        for seen_method, raw in rec.seen[before[name] :]:
            decoded = unquote(raw)
            assert _advertised(decoded), (target, name, raw)
            assert (seen_method, decoded.split("/")[2]) in {("POST", "echo"), ("GET", "items")}
            named = unquote(target).startswith("/services/")
            if named:  # a /services/<name>/ request reaches <name> only
                assert unquote(target.split("/")[2]) == name, (target, name, raw)


@given(
    name=st.sampled_from(["template", "a-b"]),
    raw_name=st.text(alphabet="%0123456789abcdefABCDEF/.-tmplae", max_size=24),
    rest=st.text(alphabet="%0123456789abcdef/.xv", max_size=24),
)
def test_the_raw_cut_decodes_to_the_matched_path_or_refuses(
    name: str, raw_name: str, rest: str
) -> None:
    raw = f"/services/{raw_name}/{rest}"
    path = unquote(raw)
    prefix = f"/services/{name}"
    if not path.startswith(prefix + "/"):
        return
    try:
        out = upstream_target("POST", path, raw, name, len(prefix))
    except NexusError as error:
        refused = error.status_code
    else:
        refused = 0
    if refused:
        assert refused == 404
        return
    assert unquote(out) == path[len(prefix) :]
    assert unquote(raw[: len(raw) - len(out)]) == prefix
