"""Plain ASGI middleware: request ids, timing, in-flight accounting, access log, body size limit."""

from __future__ import annotations

import logging
import re
import time
import uuid

import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body
from app.logs import request_id_var
from app.metrics import Metrics
from app.service import Service

log = logging.getLogger("app.access")

ENDPOINTS = frozenset(
    {
        "/v1/sentiment",
        "/v1/rank",
        "/v1/recommend",
        "/v1/models",
        "/v1/models/reload",
        "/livez",
        "/readyz",
        "/metrics",
    }
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def endpoint_label(path: str) -> str:
    """Metric label of a path; unknown paths share one label so that scanners cannot blow up cardinality."""
    return path if path in ENDPOINTS else "other"


class RequestContextMiddleware:
    """Request id (kept from `x-request-id` when sane), `x-total-ms`, in-flight gauges, duration histogram."""

    def __init__(self, app: ASGIApp, service: Service, metrics: Metrics) -> None:
        self.app = app
        self.service = service
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started_at"] = started
        path: str = scope["path"]
        endpoint = endpoint_label(path)
        counts = path.startswith("/v1/")
        status = 500
        token = request_id_var.set(request_id)
        in_flight = self.metrics.in_flight.labels(endpoint=endpoint)
        in_flight.inc()
        if counts:
            self.service.request_started()

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers.append("x-request-id", request_id)
                headers.append("x-total-ms", f"{(time.monotonic() - started) * 1000:.2f}")
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            elapsed = time.monotonic() - started
            in_flight.dec()
            if counts:
                self.service.request_finished()
            self.metrics.request_duration.labels(
                endpoint=endpoint,
                model=state.get("model", "none"),
                version=state.get("version", "none"),
                status=str(status),
            ).observe(elapsed)
            if status >= 400:
                log.warning("%s %s %d %.1fms", scope["method"], path, status, elapsed * 1000)
            elif endpoint not in ("/metrics", "/livez", "/readyz"):
                log.info("%s %s %d %.1fms", scope["method"], path, status, elapsed * 1000)
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`: at once from Content-Length, or once a streamed body passes it."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def _reject(self, scope: Scope, send: Send) -> None:
        self.metrics.rejected.labels(endpoint=endpoint_label(scope["path"]), reason="body_too_large").inc()
        body = orjson.dumps(
            error_body(
                "body_too_large",
                f"request body is larger than {self.max_bytes} bytes (INFERENCE_MAX_BODY_BYTES)",
            )
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = self.max_bytes + 1
            if declared > self.max_bytes:
                await self._reject(scope, send)
                return
        received = 0
        rejected = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    rejected = True
                    await self._reject(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not rejected:
                raise
