"""Exception handlers: every error leaves the service in the OpenAI envelope."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import NexusError, error_envelope, quote_input
from .responses import JSONResponse


def _param_of(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    if not parts:
        return None
    name = parts[0]
    for p in parts[1:]:
        name += f"[{p}]" if p.isdigit() else f".{p}"
    return name


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "Invalid request.", "loc": (), "type": ""}
    if first.get("type") == "json_invalid":
        body = error_envelope(
            "We could not parse the JSON body of your request: it is not valid JSON.",
            "invalid_request_error",
            "invalid_json",
        )
        return JSONResponse(body, status_code=400)
    param = _param_of(tuple(first.get("loc", ())))
    if param is None and first.get("type") in ("model_attributes_type", "dict_type"):
        body = error_envelope(
            "The request body must be a JSON object (send Content-Type: application/json).",
            "invalid_request_error",
            "invalid_json",
        )
        return JSONResponse(body, status_code=400)
    msg = quote_input(str(first.get("msg", "Invalid value.")), 200)
    param = quote_input(param) if param else param
    if first.get("type") == "missing":
        message, code = f"Missing required parameter: '{param}'.", "missing_required_parameter"
    else:
        message, code = (f"Invalid value for '{param}': {msg}" if param else msg), "invalid_value"
    return JSONResponse(
        error_envelope(message, "invalid_request_error", code, param), status_code=400
    )


def nexus_error_response(exc: NexusError) -> JSONResponse:
    return JSONResponse(exc.envelope(), status_code=exc.status_code, headers=exc.headers)


async def _on_nexus_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NexusError)
    return nexus_error_response(exc)


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_error_response(exc)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        message = f"Unknown request URL: {quote_input(request.method, 16)} {_path(request)}."
        body = error_envelope(message, "invalid_request_error", "unknown_url")
    elif status == 405:
        message = f"Method {quote_input(request.method, 16)} is not allowed for {_path(request)}."
        body = error_envelope(message, "invalid_request_error", "method_not_allowed")
    else:
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = error_envelope(str(exc.detail), kind, None)
    return JSONResponse(body, status_code=status, headers=getattr(exc, "headers", None))


def _path(request: Request) -> str:
    return quote_input(request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(NexusError, _on_nexus_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
