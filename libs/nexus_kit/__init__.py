"""The Nexus service kit: what every service is built from."""

from .app import KitState, create_app, endpoint_flags
from .errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    MethodNotAllowedError,
    ModelNotFoundError,
    NexusError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from .health import Check, CheckResult
from .logging import get_logger
from .metadata import Capabilities, Endpoint, ModelInfo, Resources, ServiceMetadata
from .requestid import current_request_id, forward_headers
from .settings import ServiceSettings, load_settings

__all__ = [
    "AuthenticationError",
    "Capabilities",
    "Check",
    "CheckResult",
    "ConflictError",
    "Endpoint",
    "InvalidRequestError",
    "KitState",
    "MethodNotAllowedError",
    "ModelInfo",
    "ModelNotFoundError",
    "NexusError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "Resources",
    "ServiceMetadata",
    "ServiceSettings",
    "ServiceUnavailableError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "create_app",
    "current_request_id",
    "endpoint_flags",
    "forward_headers",
    "get_logger",
    "load_settings",
]
