"""A fake upstream we own: a real HTTP/1.1 server on a loopback port, in the test's own loop.

The proxy talks to upstreams over a real socket (aiohttp), so its tests need a real server:
this one records every request as the upstream saw it (method, raw target, headers, body),
counts the TCP connections it accepted, and answers from handlers the test sets per route. A
handler may sleep (timeouts), touch gateway state (it runs in the same loop), or return
``DROP`` to close the connection without answering (a stale keep-alive connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import orjson

from app.discovery import Instance
from nexus_kit import ServiceMetadata


@dataclass(frozen=True)
class Seen:
    """One request as the upstream received it."""

    method: str
    target: bytes  # the raw request target: path and query, as sent
    headers: list[tuple[bytes, bytes]]  # names lower case, in order
    body: bytes

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        return next((v.decode("latin-1") for k, v in self.headers if k == key), None)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(
        cls, doc: Any, status: int = 200, headers: list[tuple[str, str]] | None = None
    ) -> Reply:
        json_type = ("content-type", "application/json")
        return cls(status, orjson.dumps(doc), [json_type, *(headers or [])])


DROP = object()  # close the connection without a response
Handler = Callable[[Seen], Awaitable["Reply | object"]]


def answer(reply: Reply) -> Handler:
    async def handler(_: Seen) -> Reply:
        return reply

    return handler


def in_turn(*replies: Reply | object) -> Handler:
    """Each call gets the next reply (``DROP`` included); the last one repeats."""
    queue = list(replies)

    async def handler(_: Seen) -> Reply | object:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler


class FakeUpstream:
    def __init__(self, metadata: ServiceMetadata | None = None) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.seen: list[Seen] = []
        self.connections = 0  # TCP connections accepted
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""  # set by start()
        if metadata is not None:
            doc = metadata.model_dump(mode="json", exclude_none=True)
            self.route("GET", "/v1/metadata", answer(Reply.json(doc)))

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def calls(self, method: str, path: str) -> list[Seen]:
        """Requests to ``path`` (query ignored)."""
        return [s for s in self.seen if s.method == method and _path(s.target) == path]

    async def start(self) -> FakeUpstream:
        if self._server is not None:
            return self
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def stop_listening(self) -> None:
        """Refuse new connections from now on (connections already open stay)."""
        if self._server is not None and self._server.is_serving():
            self._server.close()

    async def close(self) -> None:
        await self.stop_listening()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while (request := await _read_request(conn, reader)) is not None:
                self.seen.append(request)
                handler = self.routes.get((request.method, _path(request.target)), _not_found)
                reply = await handler(request)
                if not isinstance(reply, Reply):  # DROP
                    return
                writer.write(_encode(conn, reply))
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> Seen | None:
    head: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            headers = [(k.lower(), v) for k, v in head.headers.raw_items()]
            return Seen(head.method.decode(), head.target, headers, body)
        else:  # ConnectionClosed (or PAUSED, which a fresh cycle never is)
            return None


def _encode(conn: h11.Connection, reply: Reply) -> bytes:
    headers = [(k, v) for k, v in reply.headers if k.lower() != "content-length"]
    headers.append(("content-length", str(len(reply.body))))
    out = conn.send(h11.Response(status_code=reply.status, headers=headers)) or b""
    if reply.body:
        out += conn.send(h11.Data(data=reply.body)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


def _path(target: bytes) -> str:
    return target.split(b"?", 1)[0].decode("latin-1")


async def _not_found(_: Seen) -> Reply:
    return Reply.json({"detail": "Not Found"}, status=404)


@contextlib.asynccontextmanager
async def upstreams(*fakes: FakeUpstream) -> AsyncIterator[list[FakeUpstream]]:
    """Start several fakes; all are closed on the way out."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(f) for f in fakes]


def instance_of(state_instances: tuple[Instance, ...], fake: FakeUpstream) -> Instance:
    return next(i for i in state_instances if i.base_url == fake.url)
