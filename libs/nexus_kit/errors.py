"""The error tree. Routes raise these; one handler renders the OpenAI envelope.

    NexusError                       500 server_error
    ├── InvalidRequestError          400 invalid_request_error
    │   └── PayloadTooLargeError     413 invalid_request_error / payload_too_large
    ├── AuthenticationError          401 invalid_request_error / invalid_api_key
    ├── PermissionDeniedError        403 invalid_request_error / permission_denied
    ├── NotFoundError                404 invalid_request_error / not_found
    │   └── ModelNotFoundError       404 invalid_request_error / model_not_found
    ├── MethodNotAllowedError        405 invalid_request_error / method_not_allowed
    ├── ConflictError                409 invalid_request_error / conflict
    ├── RateLimitError               429 requests / rate_limit_exceeded  (+ Retry-After)
    ├── ServiceUnavailableError      503 service_unavailable             (+ Retry-After)
    ├── UpstreamError                502 upstream_error
    └── UpstreamTimeoutError         504 timeout
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

QUOTE_LIMIT = 64  # characters of user input an error message quotes


def quote_input(value: str, limit: int = QUOTE_LIMIT) -> str:
    """User input as an error message may quote it: cut to ``limit`` characters.

    A message never reflects a whole body field back (1 MB in must not be 1 MB out); the cut
    says how long the original was, so the client can still tell what it sent."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... ({len(value)} characters)"


class NexusError(Exception):
    """Base of every expected failure; carries what the envelope needs."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = dict(headers or {})

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.message, self.error_type, self.code, self.param)


class InvalidRequestError(NexusError):
    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid_request"


class PayloadTooLargeError(InvalidRequestError):
    status_code = 413
    default_code = "payload_too_large"


class AuthenticationError(NexusError):
    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"

    def __init__(self, message: str = "Invalid or missing API key.", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kw)


class PermissionDeniedError(NexusError):
    status_code = 403
    error_type = "invalid_request_error"
    default_code = "permission_denied"


class NotFoundError(NexusError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"

    def __init__(self, model: str, **kw: Any) -> None:
        kw.setdefault("param", "model")
        super().__init__(
            f"The model '{quote_input(model)}' does not exist or is not served here.", **kw
        )


class MethodNotAllowedError(NexusError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class ConflictError(NexusError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class RateLimitError(NexusError):
    status_code = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: Any) -> None:
        headers = {"Retry-After": str(max(1, int(retry_after)))}
        headers.update(kw.pop("headers", None) or {})
        super().__init__(message, headers=headers, **kw)


class ServiceUnavailableError(NexusError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: Any) -> None:
        headers = {"Retry-After": str(max(1, int(retry_after)))}
        headers.update(kw.pop("headers", None) or {})
        super().__init__(message, headers=headers, **kw)


class UpstreamError(NexusError):
    status_code = 502
    error_type = "upstream_error"
    default_code = "bad_gateway"


class UpstreamTimeoutError(NexusError):
    status_code = 504
    error_type = "timeout"
    default_code = "upstream_timeout"


def error_envelope(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI ``ErrorResponse`` document."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_body(error: NexusError) -> bytes:
    return orjson.dumps(error.envelope())
