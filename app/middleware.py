"""The one ASGI middleware in front of the app: request id, timing, in-flight accounting, metrics, access
log, the checks every request passes before its body is read (duplicate headers, the bearer token), the
body's size limit and deadline, plus the dispatch of the hot endpoints to their fast handlers.

Every request's body is read here, once, and replayed to whoever answers it, so the limits, the token
check and the error they give are decided in one place for the fast handlers and the FastAPI routes alike.

It sits outside FastAPI's own middleware stack (see `app.main.ServiceApp`). A hot endpoint (`routes`: the
POST /v1 inference calls) is answered here without FastAPI's routing and dependency solving; a handler
that declines (any request it would not answer exactly as FastAPI does, e.g. malformed JSON or a failed
token check) gets its body replayed into the FastAPI app, which answers it. Every other path goes to the
FastAPI app directly.
"""

from __future__ import annotations

import asyncio
import hmac
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
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import (
    BadRequest,
    BodyTimeout,
    BodyTooLarge,
    Forbidden,
    ServiceError,
    Unauthorized,
    error_body,
    rejection_reason,
    status_of,
)
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
ADMIN_PATH = "/v1/models/reload"
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
        routes: Mapping[str, FastHandler],
    ) -> None:
        self.app = app
        self.service = service
        self.metrics = metrics
        settings = service.settings
        self.max_bytes = settings.max_body_bytes
        self.body_timeout_s = settings.body_timeout_s
        self.tokens = AccessTokens(settings.api_token, settings.admin_token)
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
        authorization: list[bytes] = []
        content_types = 0
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                incoming = value
            elif key == b"content-length":
                length = value
            elif key == b"authorization":
                authorization.append(value)
            elif key == b"content-type":
                content_types += 1
        request_id = incoming.decode("latin-1") if _REQUEST_ID.match(incoming) else self.ids.next()
        id_header = request_id.encode("latin-1")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started_at"] = started
        path: str = scope["path"]
        endpoint = endpoint_label(path)
        token = request_id_var.set(request_id)
        in_flight = self._gauge(endpoint)
        in_flight.inc()
        counted = False
        status = 500
        model = version = "none"
        try:
            refusal = self._refusal(path, authorization, content_types, length)
            body: bytes | None = None
            if refusal is None:
                read = await self._read_body(receive)
                if isinstance(read, ServiceError):
                    refusal = read
                else:
                    body = read
            if refusal is not None:
                status = await self._refuse(refusal, endpoint, send, id_header, started)
                return
            if body is None:
                status = 499  # the client left while sending its body: nobody to answer
                return
            counted = path.startswith("/v1/")
            if counted:
                self.service.request_started()
            handler = self.routes.get(path) if scope["method"] == "POST" else None
            if handler is not None:
                reply = await handler(Exchange(scope, body, receive, started))
                if reply is not None:
                    status, model, version = reply.status, reply.model, reply.version
                    await _send_reply(send, reply, id_header, started, scope)
                    return
            replayed = _replay(body, receive)
            status, model, version = await self._forward(scope, replayed, send, id_header, started)
        finally:
            elapsed = time.monotonic() - started
            in_flight.dec()
            if counted:
                self.service.request_finished()
            self._observe(endpoint, model, version, status, elapsed)
            if status >= 400:
                log.warning("%s %s %d %.1fms", scope["method"], path, status, elapsed * 1000)
            elif endpoint not in _QUIET:
                log.debug("%s %s %d %.1fms", scope["method"], path, status, elapsed * 1000)
            request_id_var.reset(token)

    def _refusal(
        self, path: str, authorization: list[bytes], content_types: int, length: bytes | None
    ) -> ServiceError | None:
        """What refuses a request on its headers alone, before its body is read or parsed."""
        if len(authorization) > 1 or content_types > 1:
            twice = "authorization" if len(authorization) > 1 else "content-type"
            return BadRequest(f"the {twice} header appears more than once")
        if length is not None and _declared(length) > self.max_bytes:
            return self._too_large()
        return self.tokens.refusal(path, authorization[0] if authorization else None)

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"request body is larger than {self.max_bytes} bytes (INFERENCE_MAX_BODY_BYTES)")

    async def _read_body(self, receive: Receive) -> bytes | ServiceError | None:
        """The whole body; an error past `max_bytes` or the body deadline; None when the client left."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return None
                    chunk: bytes = message.get("body", b"")
                    if chunk:
                        size += len(chunk)
                        if size > self.max_bytes:
                            return self._too_large()
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        except TimeoutError:
            return BodyTimeout(
                f"the request body did not arrive within {self.body_timeout_s:g}s (INFERENCE_BODY_TIMEOUT_S)"
            )

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, id_header: bytes, started: float
    ) -> tuple[int, str, str]:
        """Run the FastAPI app (the body replayed by `receive`) with our headers on its response."""
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *_context_headers(id_header, started)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
        state: dict[str, Any] = scope["state"]
        return status, state.get("model", "none"), state.get("version", "none")

    async def _refuse(
        self, error: ServiceError, endpoint: str, send: Send, id_header: bytes, started: float
    ) -> int:
        """Answer a refusal decided here. A refusal before the whole body was read closes the connection:
        the unread rest of the body cannot be told from the next request."""
        status = status_of(error)
        reason = rejection_reason(error)
        if reason is not None:
            self.metrics.rejected.labels(endpoint=endpoint, reason=reason).inc()
        headers: Headers = [(b"connection", b"close")]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        reply = Reply(status, orjson.dumps(error_body(error.type, error.message)), headers)
        await _send_reply(send, reply, id_header, started)
        return status


class AccessTokens:
    """Who may call what: `/v1/models/reload` needs the admin token (and is off without one), every other
    `/v1/` path the API token when one is set; health, metrics and the docs stay open. One decision for
    every path, made on the headers before the body is read."""

    def __init__(self, api: SecretStr | None, admin: SecretStr | None) -> None:
        self._api = api.get_secret_value().encode() if api is not None else None
        self._admin = admin.get_secret_value().encode() if admin is not None else None

    def refusal(self, path: str, authorization: bytes | None) -> ServiceError | None:
        if path == ADMIN_PATH:
            if self._admin is None:
                return Forbidden("model reload is off: the server has no INFERENCE_ADMIN_TOKEN")
            expected: bytes | None = self._admin
        elif path.startswith("/v1/"):
            expected = self._api
        else:
            return None
        if expected is None:
            return None
        if authorization is None or not _bearer_matches(authorization, expected):
            return Unauthorized("missing or wrong bearer token")
        return None


def _bearer_matches(authorization: bytes, token: bytes) -> bool:
    """`Bearer <token>`: the scheme in any case, the token exactly (whitespace around it is ignored),
    compared in constant time."""
    scheme, _, given = authorization.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(b" \t"), token)


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
