"""Console settings: the kit's base settings with this service's defaults.

The console holds no secrets: the browser signs in against the auth service through the
gateway and keeps its token in memory."""

from __future__ import annotations

from nexus_kit import ServiceSettings


class ConsoleSettings(ServiceSettings):
    service_name: str = "console"
    service_port: int = 8830
