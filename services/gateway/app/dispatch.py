"""Proxied requests go straight to the proxy, past Starlette's exception layer and router.

The gateway's own routes are a dozen (kit endpoints, docs, ``/v1/models``, ``/v1/routes``,
``/v1/services``); everything else is proxied. Left to Starlette, every proxied request
would walk ``ExceptionMiddleware`` and ``AsyncExitStackMiddleware`` (each wrapping ``send``)
and then try every route's regex before falling through to the router's default app: about
a tenth of the hot path's CPU. ``ProxyFirst`` sits innermost in the user middleware (after
the kit's request context and the guard, so ids, access log, metrics and auth are the same
for both kinds of request) and sends a request whose path no own route matches directly to
the proxy. A path an own route matches, with any method, goes through the router as before
(so a wrong method still gets the router's 405). Which paths are own is asked of the routes
themselves (``BaseRoute.matches``, public API; FastAPI's included routers are opaque) once
per distinct path. It returns the chosen app's awaitable rather than awaiting it: no
coroutine frame of its own for an open stream to hold (issue 14).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

_CACHE_LIMIT = 10_000  # distinct paths remembered (parameterised paths are unbounded)


class ProxyFirst:
    def __init__(self, app: ASGIApp, proxy: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.proxy = proxy
        self.routes = routes
        self._own: dict[str, bool] = {}

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http" and not self.is_own(scope["path"]):
            return self.proxy(scope, receive, send)
        return self.app(scope, receive, send)

    def is_own(self, path: str) -> bool:
        """Whether any own route matches ``path`` (with any method); remembered per path."""
        own = self._own.get(path)
        if own is None:
            if len(self._own) >= _CACHE_LIMIT:
                self._own.clear()
            probe: Scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
            own = self._own[path] = any(
                route.matches(probe)[0] is not Match.NONE for route in self.routes
            )
        return own
