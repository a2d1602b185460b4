"""Time to first SSE event over N concurrent paced streams (wrk cannot measure this).

Each of ``concurrency`` workers holds one keep-alive connection and, until the duration is
up, sends a streaming chat completion (model ``paced``: the mock sends an event every 10 ms,
the first at once) and records the time from sending the request to the first body bytes
holding ``data:`` (SSE comments such as ``: keep-alive`` do not count), then reads the stream
to its end. Raw sockets plus httptools keep the client cheap, so it does not skew the figure.

    python bench/ttfe.py http://127.0.0.1:8800 --concurrency 32 --duration 8 --key nx-...

``--api responses`` sends the same stream as a Responses API request (``POST /v1/responses``
with ``input``; the first event is ``response.created``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools
import uvloop


@dataclass
class TtfeResult:
    streams: int = 0
    errors: int = 0
    duration_s: float = 0.0
    ttfe_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    first_error: str | None = None

    def summary(self) -> dict[str, float | int | str | None]:
        def pct(values: list[float], q: float) -> float:
            if not values:
                return float("nan")
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return {
            "streams": self.streams,
            "errors": self.errors,
            "streams_per_s": self.streams / self.duration_s if self.duration_s else 0.0,
            "ttfe_p50_ms": pct(self.ttfe_ms, 0.50),
            "ttfe_p99_ms": pct(self.ttfe_ms, 0.99),
            "ttfe_mean_ms": statistics.fmean(self.ttfe_ms) if self.ttfe_ms else float("nan"),
            "stream_p50_ms": pct(self.total_ms, 0.50),
            "first_error": self.first_error,
        }


class _Response:
    """httptools callbacks for one response; notes when the first ``data:`` bytes arrive."""

    def __init__(self) -> None:
        self.status = 0
        self.first_event_at: float | None = None
        self.complete = False
        self.keep_alive = True
        self._tail = b""

    def on_body(self, body: bytes) -> None:
        if self.first_event_at is None:
            seen = self._tail + body
            if b"data:" in seen:
                self.first_event_at = time.perf_counter()
            self._tail = seen[-5:]

    def on_message_complete(self) -> None:
        self.complete = True


PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}


def _request_bytes(host: str, path: str, key: str | None, model: str) -> bytes:
    doc: dict[str, object] = {"model": model, "stream": True}
    if path.endswith("/v1/responses"):
        doc |= {"input": "Say hello.", "max_output_tokens": 16}
    else:
        doc |= {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    body = json.dumps(doc, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n"
    )
    if key:
        head += f"Authorization: Bearer {key}\r\n"
    return (head + "\r\n").encode() + body


async def _one_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[_Response, float]:
    resp = _Response()
    parser = httptools.HttpResponseParser(resp)
    start = time.perf_counter()
    writer.write(request)
    while not resp.complete:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("connection closed mid-response")
        parser.feed_data(data)
    resp.status = parser.get_status_code()
    resp.keep_alive = parser.should_keep_alive()
    return resp, start


async def _worker(
    url: str, key: str | None, model: str, deadline: float, result: TtfeResult, jitter_s: float,
    api: str = "chat",
) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path.rstrip("/") or "") + PATHS[api]
    request = _request_bytes(f"{host}:{port}", path, key, model)
    await asyncio.sleep(random.uniform(0, jitter_s))
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    while time.perf_counter() < deadline:
        try:
            if writer is None or reader is None:
                reader, writer = await asyncio.open_connection(host, port)
            remaining = max(0.1, deadline - time.perf_counter() + 30.0)
            resp, start = await asyncio.wait_for(_one_stream(reader, writer, request), remaining)
            done = time.perf_counter()
            if resp.status != 200 or resp.first_event_at is None:
                raise RuntimeError(f"status {resp.status}, first event seen: {resp.first_event_at}")
            result.streams += 1
            result.ttfe_ms.append((resp.first_event_at - start) * 1000.0)
            result.total_ms.append((done - start) * 1000.0)
            if not resp.keep_alive:
                writer.close()
                writer = reader = None
        except (OSError, RuntimeError, TimeoutError, httptools.HttpParserError) as exc:
            result.errors += 1
            result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
            if writer is not None:
                writer.close()
            writer = reader = None
            await asyncio.sleep(0.05)
    if writer is not None:
        writer.close()


async def measure(
    url: str,
    concurrency: int = 32,
    duration_s: float = 8.0,
    key: str | None = None,
    model: str = "paced",
    jitter_s: float = 0.01,
    api: str = "chat",
) -> TtfeResult:
    """Run ``concurrency`` paced streams back to back for ``duration_s``; streams started
    before the deadline run to their end."""
    result = TtfeResult()
    start = time.perf_counter()
    deadline = start + duration_s
    await asyncio.gather(
        *(_worker(url, key, model, deadline, result, jitter_s, api) for _ in range(concurrency))
    )
    result.duration_s = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="base URL, e.g. http://127.0.0.1:8800")
    parser.add_argument("--concurrency", "-c", type=int, default=32)
    parser.add_argument("--duration", "-d", type=float, default=8.0)
    parser.add_argument("--key", default=None, help="bearer key")
    parser.add_argument("--model", default="paced")
    parser.add_argument("--api", choices=sorted(PATHS), default="chat")
    args = parser.parse_args(argv)
    result = uvloop.run(
        measure(args.url, args.concurrency, args.duration, args.key, args.model, api=args.api)
    )
    print("BENCH_JSON " + json.dumps(result.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
