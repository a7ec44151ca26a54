"""Renders every error as `{"error": {"type", "message"}}` with the status from app.errors, and counts it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.api.responses import error_response
from app.errors import ServiceError, rejection_reason, status_of
from app.metrics import Metrics
from app.middleware import endpoint_label

log = logging.getLogger("app.errors")

_HTTP_TYPES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def describe(error: ServiceError, metrics: Metrics, endpoint: str) -> tuple[int, dict[str, str]]:
    """Status and extra headers of a service error; counts it (by rejection reason, or >= 500 by type)
    and logs the failures. Shared by the exception handler and the JSON endpoints (app.api.endpoints)."""
    status = status_of(error)
    reason = rejection_reason(error)
    if reason is not None:
        metrics.rejected.labels(endpoint=endpoint, reason=reason).inc()
    elif status >= 500:
        metrics.errors.labels(type=error.type).inc()
    headers = {}
    retry_after = getattr(error, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status >= 500 and status != 503:
        log.error("%s: %s", error.type, error.message)
    return status, headers


async def service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    status, headers = describe(exc, _metrics(request), endpoint_label(request.url.path))
    return error_response(status, exc.type, exc.message, headers)


def describe_validation(errors: Sequence[Any], in_body: bool = True) -> str:
    """One message for a body that failed validation, naming each field as in the JSON body (`texts.0`,
    like the service's own limit errors), at most five of them. `in_body`: FastAPI's locations start with
    "body"; pydantic's own start at the body's fields."""
    parts = []
    for err in errors[:5]:
        loc = list(err.get("loc", ()))
        if in_body:
            loc = loc[1:] if loc[:1] == ["body"] else loc
        where = ".".join(str(p) for p in loc) or "body"
        if err.get("type") == "json_invalid":
            parts.append(f"body: invalid JSON ({err.get('ctx', {}).get('error', 'parse error')})")
        else:
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    _metrics(request).rejected.labels(
        endpoint=endpoint_label(request.url.path), reason="invalid_request"
    ).inc()
    return error_response(422, "invalid_request", describe_validation(exc.errors()))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # FastAPI's answer to a body it cannot decode: malformed JSON is a 422 here
        _metrics(request).rejected.labels(
            endpoint=endpoint_label(request.url.path), reason="invalid_request"
        ).inc()
        return error_response(422, "invalid_request", f"body: {exc.detail}")
    error_type = _HTTP_TYPES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, error_type, str(exc.detail), dict(exc.headers or {}))


INTERNAL_ERROR_MESSAGE = "internal error; see the server log for this request id"


def count_unexpected(metrics: Metrics, exc: BaseException) -> None:
    log.exception("unhandled error", exc_info=exc)
    metrics.errors.labels(type="internal_error").inc()


async def unexpected_error(request: Request, exc: Exception) -> Response:
    count_unexpected(_metrics(request), exc)
    return error_response(500, "internal_error", INTERNAL_ERROR_MESSAGE)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
