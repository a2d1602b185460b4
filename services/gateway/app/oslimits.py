"""The OS limits a gateway needs for its configured connections, checked (and warned) at start.

Every open client connection and every pooled upstream connection is a file descriptor, so a
worker sized for ``GATEWAY_MAX_CLIENT_CONNECTIONS`` clients and ``UPSTREAM_MAX_CONNECTIONS``
upstream connections needs about their sum plus a margin under ``RLIMIT_NOFILE``; past it,
``accept`` fails with EMFILE and clients see resets. The soft limit is raised to the hard
limit here (what Go's runtime and nginx's ``worker_rlimit_nofile`` do); a hard limit too low
is only the operator's to raise (``ulimit -n``, Docker ``--ulimit nofile=``, systemd
``LimitNOFILE=``). The listen backlog is capped by ``net.core.somaxconn``: a burst of new
connections larger than the cap waits for SYN retransmits (1 s, 3 s, 7 s...).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

from nexus_kit import get_logger

from .settings import GatewaySettings

log = get_logger("nexus.gateway.oslimits")
FD_MARGIN = 256  # logs, etcd, auth, metrics, the event loop's own
SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


@dataclass(frozen=True, slots=True)
class Need:
    client_connections: int
    upstream_connections: int
    backlog: int

    @property
    def fds(self) -> int:
        # Each client may hold an upstream connection (a stream), up to the pool's limit.
        return self.client_connections + self.upstream_connections + FD_MARGIN


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Lift the soft RLIMIT_NOFILE towards ``wanted`` (never past the hard limit); return both."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
        except (ValueError, OSError):
            pass
    return soft, hard


def read_somaxconn(path: Path = SOMAXCONN) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None  # not Linux, or /proc not mounted: nothing to say


def check(need: Need, somaxconn_path: Path = SOMAXCONN) -> list[str]:
    """Warnings (empty when the limits fit); raises the soft fd limit first when it can."""
    warnings = []
    soft, hard = raise_nofile(need.fds)
    if soft != resource.RLIM_INFINITY and soft < need.fds:
        warnings.append(
            f"RLIMIT_NOFILE is {soft} (hard {hard}) but GATEWAY_MAX_CLIENT_CONNECTIONS="
            f"{need.client_connections} + UPSTREAM_MAX_CONNECTIONS={need.upstream_connections} "
            f"need about {need.fds} per worker: raise it (ulimit -n, docker --ulimit "
            "nofile=65536:65536, systemd LimitNOFILE) or lower those settings"
        )
    somaxconn = read_somaxconn(somaxconn_path)
    if somaxconn is not None and somaxconn < need.backlog:
        warnings.append(
            f"net.core.somaxconn is {somaxconn}, below GATEWAY_BACKLOG={need.backlog}: the "
            "kernel caps the accept queue there, and a larger burst of new connections waits "
            "for SYN retransmits (sysctl -w net.core.somaxconn=4096, or docker --sysctl)"
        )
    return warnings


def need_of(settings: GatewaySettings) -> Need:
    return Need(
        settings.gateway_max_client_connections,
        settings.upstream_max_connections,
        settings.gateway_backlog,
    )


def warn_at_start(settings: GatewaySettings) -> list[str]:
    """Log each warning of ``check`` once (the supervisor, or a lone gateway process)."""
    warnings = check(need_of(settings))
    for warning in warnings:
        log.warning("os limit too low", detail=warning)
    return warnings
