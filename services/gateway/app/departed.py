"""Routes whose last instance left: remembered for ``ROUTE_GONE_S`` so they answer 503, not 404.

When a service's last instance goes (SIGKILL and lease expiry, a crash, a deploy), its paths
would vanish from the table and a client would get ``404 unknown_url``, the answer for a typo,
and a public path (``POST /v1/auth/token``) would turn into a protected one (401 "Missing
bearer token"). Instead every route that had targets in the previous table and has none in the
new one is kept, flags and all, without targets and with a ``gone_until`` deadline: the proxy
answers ``503 service_unavailable`` with ``Retry-After`` and the guard still sees it as public.
When an instance serves the path again the memory is dropped; after the deadline the route
answers 404 again (``RoutingTable.resolve``) and is dropped at the next rebuild.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from .routing import Route, RoutingTable

Departed = dict[tuple[str, str], Route]


def remember(
    old: RoutingTable, new: RoutingTable, known: Mapping[tuple[str, str], Route],
    now: float, keep_s: float,
) -> Departed:  # fmt: skip
    """The departed routes after ``old`` became ``new`` (``new`` built without them)."""
    if keep_s <= 0:
        return {}
    served = {(r.method, r.path) for r in new.routes if r.targets}
    found: Departed = {
        key: route
        for key, route in known.items()
        if key not in served and route.gone_until > now
    }
    for route in old.routes:
        key = (route.method, route.path)
        if route.targets and key not in served:
            found[key] = replace(route, targets=(), gone_until=now + keep_s)
    return found
