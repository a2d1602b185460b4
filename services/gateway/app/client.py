"""The proxy's upstream client: one pooled aiohttp session per process (ADR 0005).

aiohttp, not httpx, because on this hot path the client is most of the cost: the same bare
proxy does ~2,650-3,300 req/s per core with aiohttp, ~1,400-2,700 with httpx over the
``httpx-aiohttp`` transport and ~270-460 with plain httpx (``bench/clients.py``). httpx stays
for everything off the hot path (discovery, probes, Ollama, auth).

The session forwards what the client sent and adds as little as it can: no cookie jar (a
``Set-Cookie`` from one caller's upstream must never reach another caller), no redirects, no
decompression (bytes pass through with their ``Content-Encoding``), no ``User-Agent``,
``Accept``, ``Accept-Encoding`` or ``Content-Type`` of its own, no proxy from the environment.
Idle connections are dropped after ``UPSTREAM_KEEPALIVE_S`` (4 s), before uvicorn's 5 s.

Failures, as the proxy sorts them (order matters: a connect error is also an ``OSError``):

- ``CONNECT``: nothing reached the upstream (refused, unreachable, connect timeout): fail over.
- ``TIMEOUT``: no byte within the first-byte timeout (``sock_read``): 504.
- ``STALE``: the connection broke before a response (a pooled connection the upstream had
  just closed, or a reset): retried once when the body can be resent.
- any other ``aiohttp.ClientError``: a broken response: 502.
"""

from __future__ import annotations

import aiohttp
from aiohttp.client_reqrep import RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy

CONNECT: tuple[type[Exception], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
)
TIMEOUT: tuple[type[Exception], ...] = (aiohttp.ServerTimeoutError,)
STALE: tuple[type[Exception], ...] = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    aiohttp.ClientPayloadError,
)
ClientError = aiohttp.ClientError
# aiohttp itself retries these once on a broken pooled connection (RFC 9112 §9.3.1.1, its
# ``client.IDEMPOTENT_METHODS``); the proxy retries the others, so each gets one retry in all.
RETRIED_BY_CLIENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


def make_client(*, max_connections: int, keepalive_s: float) -> aiohttp.ClientSession:
    """The one upstream session of the process (open it inside the running loop)."""
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,
        keepalive_timeout=keepalive_s,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,
    )


def timeout(connect_s: float, first_byte_s: float) -> aiohttp.ClientTimeout:
    """Per-request limits: connect, and each read (the first byte, then between chunks)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect_s, sock_read=first_byte_s)


def shed_request_headers(response: aiohttp.ClientResponse) -> None:
    """Let go of the request headers aiohttp keeps on a response for its whole life
    (``request_info``, quoted by its errors, which the gateway never shows): an open stream
    held them for as long as it ran, ~4 KB with the openai SDK's (issue 14). URL and method
    stay. aiohttp 3.14 keeps them in ``_request_info`` and caches the property in ``_cache``;
    ``tests/test_client.py`` notices if either moves."""
    info = response.request_info
    shed = RequestInfo(info.url, info.method, _NO_HEADERS, info.real_url)
    response._request_info = response._cache["request_info"] = shed
