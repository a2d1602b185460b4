"""Which HTTP client on the proxy hot path: httpx, httpx over the aiohttp transport, or aiohttp.

For each client, a minimal pure-ASGI proxy (one pooled client for the process, request body
read whole and forwarded as bytes, response streamed back chunk by chunk) runs on uvicorn
(uvloop + httptools, no access log) pinned to CPU 0 in front of the mock upstream; wrk on
CPU 1 loads it. The same keep-alive settings for every client: a pool of 256 connections,
idle ones dropped after 4 s (shorter than uvicorn's 5 s). This is the figure the gateway's
client ADR rests on: nothing but the client differs between the rows.

    .venv/bin/python bench/clients.py [--duration 5] [--clients httpx,aiohttp] [--json out.json]
    .venv/bin/python -m bench.clients serve --client aiohttp --port 9000 --upstream http://...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Protocol

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from bench.harness import ms

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CLIENTS = ("httpx", "httpx-aiohttp", "aiohttp")
POOL_SIZE = 256
KEEPALIVE_S = 4.0
HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
        b"proxy-authenticate", b"proxy-authorization", b"host",
    }
)  # fmt: skip


class Upstream(Protocol):
    """The one thing that differs per client: send a request, stream the answer to ``send``."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def forward(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes, send: Send
    ) -> None: ...


def _response_start(status: int, headers: list[tuple[bytes, bytes]]) -> Message:
    kept = [(k.lower(), v) for k, v in headers if k.lower() not in HOP_BY_HOP]
    return {"type": "http.response.start", "status": status, "headers": kept}


class HttpxUpstream:
    def __init__(self, via_aiohttp: bool = False) -> None:
        self.via_aiohttp = via_aiohttp
        self.client: Any = None

    async def start(self) -> None:
        import httpx

        limits = httpx.Limits(
            max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE,
            keepalive_expiry=KEEPALIVE_S,
        )  # fmt: skip
        timeout = httpx.Timeout(60.0, connect=5.0)
        if self.via_aiohttp:
            import aiohttp
            from httpx_aiohttp import AiohttpTransport

            def session() -> aiohttp.ClientSession:
                connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=KEEPALIVE_S)
                return aiohttp.ClientSession(connector=connector, auto_decompress=False)

            transport = AiohttpTransport(client=session, limits=limits)
            self.client = httpx.AsyncClient(transport=transport, timeout=timeout)
        else:
            self.client = httpx.AsyncClient(limits=limits, timeout=timeout)

    async def close(self) -> None:
        await self.client.aclose()

    async def forward(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes, send: Send
    ) -> None:
        request = self.client.build_request(method, url, headers=headers, content=body)
        response = await self.client.send(request, stream=True)
        try:
            await send(_response_start(response.status_code, response.headers.raw))
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


class AiohttpUpstream:
    def __init__(self) -> None:
        self.session: Any = None

    async def start(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=KEEPALIVE_S)
        self.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=60.0, connect=5.0),
        )  # fmt: skip

    async def close(self) -> None:
        await self.session.close()

    async def forward(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes, send: Send
    ) -> None:
        hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        async with self.session.request(method, url, headers=hdrs, data=body) as response:
            await send(_response_start(response.status, list(response.raw_headers)))
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def make_upstream(kind: str) -> Upstream:
    if kind == "httpx":
        return HttpxUpstream()
    if kind == "httpx-aiohttp":
        return HttpxUpstream(via_aiohttp=True)
    if kind == "aiohttp":
        return AiohttpUpstream()
    raise ValueError(f"unknown client {kind!r}; one of {', '.join(CLIENTS)}")


class ProxyApp:
    """A bare ASGI proxy: no routing table, no middleware; ``/health`` answered locally."""

    def __init__(self, upstream: Upstream, upstream_url: str) -> None:
        self.upstream = upstream
        self.base = upstream_url.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/health":
            await send(_response_start(200, [(b"content-type", b"application/json")]))
            await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        url = self.base + scope["path"]
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        await self.upstream.forward(scope["method"], url, headers, b"".join(chunks), send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.upstream.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.upstream.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def serve(kind: str, port: int, upstream_url: str) -> None:
    import uvicorn

    app = ProxyApp(make_upstream(kind), upstream_url)
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
        access_log=False, log_level="warning", lifespan="on",
    )  # fmt: skip


SCENARIOS = (
    ("chat c1", "chat.lua", 1),
    ("chat c32", "chat.lua", 32),
    ("stream20 c32", "stream.lua", 32),
)


def measure_all(clients: list[str], duration_s: float) -> dict[str, dict[str, harness.LoadResult]]:
    results: dict[str, dict[str, harness.LoadResult]] = {}
    with harness.Procs() as procs:
        mock_url, _ = harness.start_mock(procs)
        results["direct (mock)"] = {
            name: harness.run_wrk(mock_url, script, conns, duration_s)
            for name, script, conns in SCENARIOS
        }
        for kind in clients:
            port = harness.free_port()
            proc = procs.start(
                f"proxy-{kind}",
                [
                    harness.PYTHON, "-m", "bench.clients", "serve", "--client", kind,
                    "--port", str(port), "--upstream", mock_url,
                ],
                cpu=harness.TARGET_CPU,
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            harness.wait_http(url + "/health", proc, timeout_s=30)
            harness.run_wrk(url, "chat.lua", 32, 1.0)  # warm-up: pool filled, code paths hot
            results[kind] = {
                name: harness.run_wrk(url, script, conns, duration_s)
                for name, script, conns in SCENARIOS
            }
            procs.stop(proc)
    return results


def render(results: dict[str, dict[str, harness.LoadResult]], header: list[str]) -> str:
    lines = [*(f"- {h}" for h in header), ""]
    lines.append(
        "| client | c1 p50 ms | c1 added p50 ms | c32 req/s | c32 p50 ms | c32 p99 ms "
        "| stream20 c32 req/s | stream p99 ms | errors |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    direct_c1 = results["direct (mock)"]["chat c1"].p50_ms
    for kind, rows in results.items():
        c1, c32, st = rows["chat c1"], rows["chat c32"], rows["stream20 c32"]
        errors = c1.errors + c32.errors + st.errors
        added = "—" if kind.startswith("direct") else f"{c1.p50_ms - direct_c1:+.2f}"
        lines.append(
            f"| {kind} | {ms(c1.p50_ms)} | {added} | {c32.rps:,.0f} | {ms(c32.p50_ms)} "
            f"| {ms(c32.p99_ms)} | {st.rps:,.0f} | {ms(st.p99_ms)} | {errors} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    srv = sub.add_parser("serve", help="run one proxy (used by the benchmark itself)")
    srv.add_argument("--client", choices=CLIENTS, required=True)
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--upstream", required=True)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.client, args.port, args.upstream)
        return 0
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for kind in clients:
        make_upstream(kind)  # reject unknown names before starting anything
    header = harness.load_header()
    print("\n".join(header), flush=True)
    start = time.monotonic()
    results = measure_all(clients, args.duration)
    table = render(results, [*header, f"wrk: 1 thread, {args.duration:.0f}s per run"])
    print("\n" + table + f"\n\n(total {time.monotonic() - start:.0f}s)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {k: {n: r.as_dict() for n, r in rows.items()} for k, rows in results.items()},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
