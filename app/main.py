"""The application factory: `uvicorn --factory app.main:create_app`.

Lifespan: read the store, verify every file's sha256, create the sessions, warm them up, then report
ready. SIGTERM: readiness 503 at once, new work 503, queued and in-flight work finishes (at most
INFERENCE_DRAIN_TIMEOUT_S), then uvicorn's own shutdown runs and the lifespan stops the engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from types import FrameType
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from app.api import handlers, health, kserve, models, openai, ranking, rerank, sentiment
from app.api.endpoints import Endpoint, add_to_openapi, json_handlers
from app.api.responses import ORJSONResponse
from app.errors import Draining
from app.logs import configure_logging
from app.metrics import Metrics
from app.middleware import ServiceMiddleware
from app.service import Service
from app.settings import Settings, get_settings

log = logging.getLogger("app.main")

# Once nothing is in flight, keep answering 503 until callers have been quiet this long, so that the
# listener does not close under a caller that is about to send on a kept-alive connection.
DRAIN_QUIET_S = 0.5

DESCRIPTION = """Ranking, recommendation and review sentiment over compressed transformer models
(ONNX Runtime).
Every answer names the model and version that produced it; errors are `{"error": {"type", "message"}}`."""


async def _drain_then_exit(service: Service, timeout: float, forward: Callable[[], None]) -> None:
    log.info("SIGTERM: draining (at most %.1fs)", timeout)
    if not await service.wait_idle(timeout, quiet_s=min(DRAIN_QUIET_S, timeout / 4)):
        dropped = 0
        for engine in service.registry.engines():
            dropped += engine.abort_queued(Draining("drain timeout passed; the server is shutting down"))
        log.warning("drain timeout passed: %d queued texts refused", dropped)
    log.info("drained; shutting down")
    forward()


def install_drain_handler(service: Service, timeout: float) -> Callable[[], None]:
    """Put our SIGTERM handler in front of the server's (uvicorn's); returns the function that undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals are for the main thread only (e.g. TestClient runs us elsewhere)
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    tasks: set[asyncio.Task[None]] = set()

    def forward(signum: int, frame: FrameType | None) -> Callable[[], None]:
        def call() -> None:
            if callable(previous):
                previous(signum, frame)
            else:
                signal.signal(signal.SIGTERM, previous)
                os.kill(os.getpid(), signum)

        return call

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if service.draining:  # a second SIGTERM: stop waiting
            forward(signum, frame)()
            return
        service.begin_drain()

        def start() -> None:
            task = loop.create_task(_drain_then_exit(service, timeout, forward(signum, frame)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        loop.call_soon_threadsafe(start)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def log_access_control(settings: Settings) -> None:
    """Say at startup who may call what, so that a deployment serving without auth is seen at once."""
    if settings.api_token is not None:
        log.info("auth on: /v1 and /v2 endpoints need the bearer token (INFERENCE_API_TOKEN)")
    else:
        log.warning("auth OFF: /v1 and /v2 endpoints answer anyone (INFERENCE_API_TOKEN is not set)")
    if settings.admin_token is not None:
        log.info("model reload on: POST /v1/models/reload needs the admin token (INFERENCE_ADMIN_TOKEN)")
    else:
        log.info("model reload off: POST /v1/models/reload answers 403 (INFERENCE_ADMIN_TOKEN is not set)")


# The JSON inference endpoints (app.api.endpoints): answered by ServiceMiddleware, described in the OpenAPI
# document from the same declarations.
JSON_ENDPOINTS: tuple[Endpoint, ...] = (
    sentiment.SENTIMENT,
    ranking.RANK,
    ranking.RECOMMEND,
    openai.EMBEDDINGS,
    rerank.RERANK_V1,
    rerank.RERANK_V2,
)


class ServiceApp(FastAPI):
    """FastAPI with one more layer outside its whole middleware stack (`front`: ServiceMiddleware), so
    that the JSON endpoints pay for one middleware and no routing or dependency solving, and whose
    OpenAPI document describes them too."""

    def __init__(
        self, front: Callable[[ASGIApp], ASGIApp], endpoints: Sequence[Endpoint], **kwargs: Any
    ) -> None:
        self._front = front
        self._endpoints = tuple(endpoints)
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        return self._front(super().build_middleware_stack())

    def openapi(self) -> dict[str, Any]:
        if not self.openapi_schema:
            self.openapi_schema = add_to_openapi(super().openapi(), self._endpoints)
        return self.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; settings from the environment (INFERENCE_*) unless given."""
    settings = settings if settings is not None else get_settings()
    configure_logging(settings.log_level, settings.log_format)
    metrics = Metrics()
    service = Service(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log_access_control(settings)
        await service.start()
        ready, problems = service.readiness()
        log.info("started: %s", "ready" if ready else "not ready: " + "; ".join(problems))
        restore = install_drain_handler(service, settings.drain_timeout_s)
        poller = asyncio.create_task(service.poll_store()) if settings.reload_poll_s > 0 else None
        try:
            yield
        finally:
            restore()
            if poller is not None:
                poller.cancel()
            service.begin_drain()
            await service.registry.close(settings.drain_timeout_s)
            log.info("engines stopped")

    def front(inner: ASGIApp) -> ASGIApp:
        return ServiceMiddleware(inner, service, metrics, json_handlers(JSON_ENDPOINTS, service, metrics))

    app = ServiceApp(
        front,
        JSON_ENDPOINTS,
        title="storefront-inference",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        # FastAPI's built-in OpenTelemetry hooks: off, and never auto-configured from the environment
        # (no exporter may open a network connection; our metrics are the Prometheus ones).
        telemetry={
            "tracing": False,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
        },
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = service
    handlers.install(app)
    for module in (models, health, kserve):
        app.include_router(module.router)
    return app
