"""Template settings: the kit's base settings with this service's defaults."""

from __future__ import annotations

from nexus_kit import ServiceSettings


class TemplateSettings(ServiceSettings):
    service_name: str = "template"
    service_port: int = 9000
