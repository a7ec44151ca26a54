"""The one ASGI middleware in front of the app: request id, trace context, timing, in-flight accounting,
metrics, access log, the checks every request passes before its body is read (duplicate headers, the bearer
token), the body's size limit and deadline, and the dispatch of the JSON endpoints.

Every request's body is read here, once. The JSON inference endpoints (`routes`: app.api.endpoints, one
implementation each) are answered here without FastAPI's routing and dependency solving; every other path
goes to the FastAPI app with the body replayed. So the limits, the token check and the errors they give are
decided in one place for every path.

It sits outside FastAPI's own middleware stack (see `app.main.ServiceApp`).
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
from app.logs import TraceContext, parse_traceparent, request_id_var, trace_var
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
        "/v1/embeddings",
        "/v1/rerank",
        "/v2/rerank",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/livez",
        "/readyz",
        "/metrics",
    }
)
# KServe's per-model paths, labelled without the model's name: /v2/models/{name}[/versions/{v}]/<suffix>.
_KSERVE_SUFFIXES = ("/infer", "/ready")
_QUIET = frozenset({"/metrics", "/livez", "/readyz", "/v2/health/live", "/v2/health/ready"})
# Paths that need the API token (when one is set) and count as requests in flight for the drain.
_API_PREFIXES = ("/v1/", "/v2/")
_OPEN_PREFIXES = ("/v2/health/",)
ADMIN_PATH = "/v1/models/reload"
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
Headers = list[tuple[bytes, bytes]]
# ASGI extension offered by `app.http.ServiceHttpProtocol`: (status, headers, body) -> bool, the whole
# response in one write; False when it wrote nothing and the two ASGI messages must be sent instead.
WHOLE_RESPONSE = "storefront.whole_response"
WholeResponse = Callable[[int, Headers, bytes], bool]


def endpoint_label(path: str) -> str:
    """Metric label of a path; unknown paths share one label so that scanners cannot blow up cardinality."""
    if path in ENDPOINTS:
        return path
    if path.startswith("/v2/models/"):
        suffix = next((s for s in _KSERVE_SUFFIXES if path.endswith(s)), "")
        return "/v2/models/{name}" + suffix
    return "other"


def is_kserve_path(path: str) -> bool:
    """Open Inference Protocol paths (app.api.kserve), whose errors are `{"error": "<message>"}`."""
    return path == "/v2" or path.startswith(("/v2/models/", "/v2/health/"))


def is_api_path(path: str) -> bool:
    """/v1 and /v2 paths, but for KServe's health checks (open, like /livez and /readyz)."""
    return path.startswith(_API_PREFIXES) and not path.startswith(_OPEN_PREFIXES)


class RequestIds:
    """Ids unique per process start: a random prefix and a counter (cheaper than a uuid4 per request)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._count):x}"


@dataclass(slots=True)
class Reply:
    """A complete answer of a JSON endpoint; `model`/`version` label the request-duration metric."""

    status: int
    body: bytes
    headers: Headers = field(default_factory=list)
    model: str = "none"
    version: str = "none"


@dataclass(slots=True)
class Exchange:
    """What a JSON endpoint gets: the request's scope, its whole body, and the ASGI receive (for the
    disconnect watch)."""

    scope: Scope
    body: bytes
    receive: Receive
    started: float


# The one implementation of a JSON endpoint (app.api.endpoints): it answers every request to its path.
JsonHandler = Callable[[Exchange], Awaitable[Reply]]


class ServiceMiddleware:
    """Request id (kept from `x-request-id` when sane), `x-total-ms`, in-flight gauges, duration
    histogram, access log (DEBUG; refusals and failures at WARNING), 413 over `max_bytes`, JSON endpoints."""

    def __init__(
        self,
        app: ASGIApp,
        service: Service,
        metrics: Metrics,
        routes: Mapping[str, JsonHandler],
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
        trace: TraceContext | None = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                incoming = value
            elif key == b"content-length":
                length = value
            elif key == b"authorization":
                authorization.append(value)
            elif key == b"content-type":
                content_types += 1
            elif key == b"traceparent":
                trace = parse_traceparent(value)
        request_id = incoming.decode("latin-1") if _REQUEST_ID.match(incoming) else self.ids.next()
        context = Context(request_id.encode("latin-1"), started, trace)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started_at"] = started
        path: str = scope["path"]
        endpoint = endpoint_label(path)
        token = request_id_var.set(request_id)
        trace_token = trace_var.set(trace)
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
                status = await self._refuse(refusal, path, send, context)
                return
            if body is None:
                status = 499  # the client left while sending its body: nobody to answer
                return
            counted = is_api_path(path)
            if counted:
                self.service.request_started()
            handler = self.routes.get(path)
            if handler is not None:
                reply = await handler(Exchange(scope, body, receive, started))
                status, model, version = reply.status, reply.model, reply.version
                await _send_reply(send, reply, context, scope)
                return
            replayed = _replay(body, receive)
            status, model, version = await self._forward(scope, replayed, send, context)
        finally:
            elapsed = time.monotonic() - started
            in_flight.dec()
            if counted:
                self.service.request_finished()
            self._observe(endpoint, model, version, status, elapsed)
            if status >= 400 or (endpoint not in _QUIET and log.isEnabledFor(logging.DEBUG)):
                ms = round(elapsed * 1000, 1)
                fields = {"method": scope["method"], "path": path, "status": status, "duration_ms": ms}
                fields.update(model=model, version=version)
                level = logging.WARNING if status >= 400 else logging.DEBUG
                log.log(level, "%s %s %d %.1fms", scope["method"], path, status, ms, extra=fields)
            trace_var.reset(trace_token)
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
        self, scope: Scope, receive: Receive, send: Send, context: Context
    ) -> tuple[int, str, str]:
        """Run the FastAPI app (the body replayed by `receive`) with our headers on its response."""
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *context.headers()]
            await send(message)

        await self.app(scope, receive, send_with_headers)
        state: dict[str, Any] = scope["state"]
        return status, state.get("model", "none"), state.get("version", "none")

    async def _refuse(self, error: ServiceError, path: str, send: Send, context: Context) -> int:
        """Answer a refusal decided here, in the error shape of the path's protocol. A refusal before the
        whole body was read closes the connection: the unread rest of the body cannot be told from the
        next request."""
        status = status_of(error)
        reason = rejection_reason(error)
        if reason is not None:
            self.metrics.rejected.labels(endpoint=endpoint_label(path), reason=reason).inc()
        headers: Headers = [(b"connection", b"close")]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        body = {"error": error.message} if is_kserve_path(path) else error_body(error.type, error.message)
        reply = Reply(status, orjson.dumps(body), headers)
        await _send_reply(send, reply, context)
        return status


class AccessTokens:
    """Who may call what: `/v1/models/reload` needs the admin token (and is off without one), every other
    `/v1/` and `/v2/` path the API token when one is set; health (`/livez`, `/readyz`, `/v2/health/*`),
    metrics and the docs stay open. One decision for every path, made on the headers before the body is
    read."""

    def __init__(self, api: SecretStr | None, admin: SecretStr | None) -> None:
        self._api = api.get_secret_value().encode() if api is not None else None
        self._admin = admin.get_secret_value().encode() if admin is not None else None

    def refusal(self, path: str, authorization: bytes | None) -> ServiceError | None:
        if path == ADMIN_PATH:
            if self._admin is None:
                return Forbidden("model reload is off: the server has no INFERENCE_ADMIN_TOKEN")
            expected: bytes | None = self._admin
        elif is_api_path(path):
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


@dataclass(frozen=True, slots=True)
class Context:
    """What every answer of a request carries back: its id, its total time and the caller's trace."""

    request_id: bytes
    started: float
    trace: TraceContext | None

    def headers(self) -> Headers:
        total = f"{(time.monotonic() - self.started) * 1000:.2f}".encode()
        headers = [(b"x-request-id", self.request_id), (b"x-total-ms", total)]
        if self.trace is not None:
            headers.append((b"traceparent", self.trace.traceparent()))
        return headers


async def _send_reply(send: Send, reply: Reply, context: Context, scope: Scope | None = None) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(reply.body)).encode()),
        *reply.headers,
        *context.headers(),
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
