"""structlog JSON logging: one line per event, ``request_id`` bound on every line of a request."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_SECRET_KEYS = ("authorization", "password", "api_key", "token", "secret", "key")


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    # Last line of defence: never print a secret even if a caller passed one by mistake.
    for name in list(event):
        lowered = name.lower()
        if lowered in _SECRET_KEYS or lowered.endswith(("_password", "_secret", "_token")):
            event[name] = "[redacted]"
    return event


def configure_logging(level: str = "INFO", service: str | None = None) -> None:
    """Route structlog and stdlib logging (uvicorn's included) to JSON lines on stderr."""
    def add_service(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        if service:
            event.setdefault("service", service)
        return event

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_service,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # The kit logs one line per request itself; uvicorn's access line would be a duplicate.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("httpx", "httpcore", "grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
