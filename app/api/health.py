"""GET /livez, /readyz, /metrics (open: no bearer token)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.api.dependencies import ServiceDep
from app.api.responses import ORJSONResponse
from app.api.schemas import HealthResponse
from app.metrics import CONTENT_TYPE_LATEST

router = APIRouter(tags=["health"])


@router.get(
    "/livez",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "A model's worker thread died: restart me."}},
)
async def livez(service: ServiceDep) -> ORJSONResponse:
    """200 while the event loop answers and every engine has its worker threads (503: restart me)."""
    problems = service.liveness()
    return ORJSONResponse(
        {"status": "dead" if problems else "alive", "problems": problems},
        status_code=503 if problems else 200,
    )


@router.get(
    "/readyz",
    response_model=HealthResponse,
    responses={
        503: {"model": HealthResponse, "description": "Loading models, draining, or a default model missing."}
    },
)
async def readyz(service: ServiceDep) -> ORJSONResponse:
    """200 only when the models are verified and warmed up and the server is not draining."""
    ready, problems = service.readiness()
    return ORJSONResponse(
        {"status": "ready" if ready else "not_ready", "problems": problems}, status_code=200 if ready else 503
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
            "description": "Prometheus text format.",
        }
    },
)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics of this instance."""
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
