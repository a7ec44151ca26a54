"""The one ASGI middleware in front of the app: request id, timing, in-flight accounting, metrics, access
log and the body size limit, plus the dispatch of the hot endpoints to their fast handlers.

It sits outside FastAPI's own middleware stack (see `app.main.ServiceApp`). A hot endpoint (`routes`: the
POST /v1 inference calls) is answered here without FastAPI's routing and dependency solving; a handler
that declines (any request it would not answer exactly as FastAPI does, e.g. malformed JSON or a failed
token check) gets its body replayed into the FastAPI app, which answers it. Every other path goes to the
FastAPI app directly.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client.metrics import Gauge, Histogram
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
_QUIET = frozenset({"/metrics", "/livez", "/readyz"})
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
Headers = list[tuple[bytes, bytes]]
# ASGI extension offered by `app.http.ServiceHttpProtocol`: (status, headers, body) -> bool, the whole
# response in one write; False when it wrote nothing and the two ASGI messages must be sent instead.
WHOLE_RESPONSE = "storefront.whole_response"
WholeResponse = Callable[[int, Headers, bytes], bool]


def endpoint_label(path: str) -> str:
    """Metric label of a path; unknown paths share one label so that scanners cannot blow up cardinality."""
    return path if path in ENDPOINTS else "other"


class RequestIds:
    """Ids unique per process start: a random prefix and a counter (cheaper than a uuid4 per request)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._count):x}"


@dataclass(slots=True)
class Reply:
    """A complete answer of a fast handler; `model`/`version` label the request-duration metric."""

    status: int
    body: bytes
    headers: Headers = field(default_factory=list)
    model: str = "none"
    version: str = "none"


@dataclass(slots=True)
class Exchange:
    """What a fast handler gets: the request's scope, its whole body, and the ASGI receive (for the
    disconnect watch)."""

    scope: Scope
    body: bytes
    receive: Receive
    started: float


# A fast handler answers (Reply) or declines (None: FastAPI answers the same request instead).
FastHandler = Callable[[Exchange], Awaitable[Reply | None]]


class ServiceMiddleware:
    """Request id (kept from `x-request-id` when sane), `x-total-ms`, in-flight gauges, duration
    histogram, access log (DEBUG; refusals and failures at WARNING), 413 over `max_bytes`, fast handlers."""

    def __init__(
        self,
        app: ASGIApp,
        service: Service,
        metrics: Metrics,
        max_bytes: int,
        routes: Mapping[str, FastHandler],
    ) -> None:
        self.app = app
        self.service = service
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.routes = dict(routes)
        self.ids = RequestIds()
        self._in_flight: dict[str, Gauge] = {}
        self._duration: dict[tuple[str, str, str, int], Histogram] = {}

    # --- metrics children, looked up once per label set ---------------------------------------------
    def _gauge(self, endpoint: str) -> Gauge:
        gauge = self._in_flight.get(endpoint)
        if gauge is None:
            gauge = self._in_flight[endpoint] = self.metrics.in_flight.labels(endpoint=endpoint)
        return gauge

    def _observe(self, endpoint: str, model: str, version: str, status: int, seconds: float) -> None:
        key = (endpoint, model, version, status)
        child = self._duration.get(key)
        if child is None:
            child = self._duration[key] = self.metrics.request_duration.labels(
                endpoint=endpoint, model=model, version=version, status=str(status)
            )
        child.observe(seconds)

    # --- the request ----------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        incoming = b""
        length: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                incoming = value
            elif key == b"content-length":
                length = value
        request_id = incoming.decode("latin-1") if _REQUEST_ID.match(incoming) else self.ids.next()
        id_header = request_id.encode("latin-1")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started_at"] = started
        path: str = scope["path"]
        endpoint = endpoint_label(path)
        counts = path.startswith("/v1/")
        token = request_id_var.set(request_id)
        in_flight = self._gauge(endpoint)
        in_flight.inc()
        if counts:
            self.service.request_started()
        status = 500
        model = version = "none"
        try:
            if length is not None and _declared(length) > self.max_bytes:
                status = await self._too_large(endpoint, send, id_header, started)
                return
            handler = self.routes.get(path) if scope["method"] == "POST" else None
            if handler is not None:
                body = await self._read_body(receive)
                if body is None:
                    status = await self._too_large(endpoint, send, id_header, started)
                    return
                if isinstance(body, int):
                    status = body  # the client left while sending its body: nobody to answer
                    return
                reply = await handler(Exchange(scope, body, receive, started))
                if reply is not None:
                    status, model, version = reply.status, reply.model, reply.version
                    await _send_reply(send, reply, id_header, started, scope)
                    return
                receive = _replay(body, receive)
            status, model, version = await self._forward(scope, receive, send, id_header, started)
        finally:
            elapsed = time.monotonic() - started
            in_flight.dec()
            if counts:
                self.service.request_finished()
            self._observe(endpoint, model, version, status, elapsed)
            if status >= 400:
                log.warning("%s %s %d %.1fms", scope["method"], path, status, elapsed * 1000)
            elif endpoint not in _QUIET:
                log.debug("%s %s %d %.1fms", scope["method"], path, status, elapsed * 1000)
            request_id_var.reset(token)

    async def _read_body(self, receive: Receive) -> bytes | int | None:
        """The whole body; None past `max_bytes`; 499 when the client disconnected first."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return 499
            chunk: bytes = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_bytes:
                    return None
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, id_header: bytes, started: float
    ) -> tuple[int, str, str]:
        """Run the FastAPI app with the body limit on `receive` and our headers on its response."""
        status = 500
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
                    await self._too_large(endpoint_label(scope["path"]), send, id_header, started)
                    return {"type": "http.disconnect"}
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if rejected:
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *_context_headers(id_header, started)]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except Exception:
            if not rejected:
                raise
        if rejected:
            return 413, "none", "none"
        state: dict[str, Any] = scope["state"]
        return status, state.get("model", "none"), state.get("version", "none")

    async def _too_large(self, endpoint: str, send: Send, id_header: bytes, started: float) -> int:
        self.metrics.rejected.labels(endpoint=endpoint, reason="body_too_large").inc()
        body = orjson.dumps(
            error_body(
                "body_too_large",
                f"request body is larger than {self.max_bytes} bytes (INFERENCE_MAX_BODY_BYTES)",
            )
        )
        reply = Reply(413, body, [(b"connection", b"close")])
        await _send_reply(send, reply, id_header, started)
        return 413


def _declared(length: bytes) -> int:
    try:
        return int(length)
    except ValueError:
        return 1 << 62  # an unreadable Content-Length is refused like an oversized one


def _context_headers(id_header: bytes, started: float) -> Headers:
    total = f"{(time.monotonic() - started) * 1000:.2f}".encode()
    return [(b"x-request-id", id_header), (b"x-total-ms", total)]


async def _send_reply(
    send: Send, reply: Reply, id_header: bytes, started: float, scope: Scope | None = None
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(reply.body)).encode()),
        *reply.headers,
        *_context_headers(id_header, started),
    ]
    extensions = scope.get("extensions") if scope is not None else None
    write_whole: WholeResponse | None = extensions.get(WHOLE_RESPONSE) if extensions else None
    if write_whole is not None and write_whole(reply.status, headers, reply.body):
        return
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields the already-read body once, then the real one (for the disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
