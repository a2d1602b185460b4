"""structlog JSON logging: one line per event, ``request_id`` bound on every line of a request.

The access line (one per request, from the kit's middleware) takes a shorter road: ``AccessLog``
renders it with orjson in one step and hands the finished line to stdlib logging, whose
formatter passes it through. The fields are the same as a structlog line's; it skips the
processor chain (context merge, stack inspection, redaction of fields it never has, stdlib
``json``), which was most of the kit's per-request cost.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson
import structlog

_SECRET_KEYS = ("authorization", "password", "api_key", "token", "secret", "key")


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    # Last line of defence: never print a secret even if a caller passed one by mistake.
    for name in list(event):
        lowered = name.lower()
        if lowered in _SECRET_KEYS or lowered.endswith(("_password", "_secret", "_token")):
            event[name] = "[redacted]"
    return event


_service: str | None = None
_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}
# Marks a record whose message is already the finished JSON line.
_RENDERED = "nexus_rendered"


class _Formatter(structlog.stdlib.ProcessorFormatter):
    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, _RENDERED, False):
            return str(record.msg)
        return super().format(record)


def configure_logging(level: str = "INFO", service: str | None = None) -> None:
    """Route structlog and stdlib logging (uvicorn's included) to JSON lines on stderr."""
    global _service
    _service = service

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
    formatter = _Formatter(
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


class AccessLog:
    """Emits the per-request line: the fields of a structlog line, rendered once with orjson."""

    __slots__ = ("_logger", "_second", "_stamp")

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)
        self._second = -1
        self._stamp = ""

    def enabled(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def emit(
        self,
        level: int,
        event: str,
        fields: dict[str, Any],
        request_id: str,
        trace_id: str | None = None,
    ) -> None:
        """Log ``fields`` as ``event``; the caller passes no secrets (they are not redacted)."""
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        fields["event"] = event
        fields["request_id"] = request_id
        if trace_id:
            fields["trace_id"] = trace_id
        if _service:
            fields["service"] = _service
        fields["level"] = _LEVELS.get(level) or logging.getLevelName(level).lower()
        fields["timestamp"] = self._timestamp()
        line = orjson.dumps(fields).decode()
        record = logger.makeRecord(logger.name, level, __file__, 0, line, (), None)
        setattr(record, _RENDERED, True)
        logger.handle(record)

    def _timestamp(self) -> str:
        """ISO 8601 UTC with microseconds, as structlog's ``TimeStamper(fmt="iso")`` writes it."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1e6):06d}Z"
