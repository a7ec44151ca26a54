"""GET /v1/models and POST /v1/models/reload"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from app.api.dependencies import ServiceDep, bearer_token, require_accepting
from app.api.responses import ORJSONResponse
from app.api.schemas import ModelsResponse, ReloadResponse, error_responses
from app.registry import PROVIDER_LABEL, ServedModel
from app.service import Service

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(bearer_token)])


def _entry(served: ServedModel) -> dict[str, Any]:
    m = served.manifest
    versus = m.versus_teacher or {}
    quality = None
    if versus.get("worst_delta") is not None:
        quality = {k: versus[k] for k in ("metric", "worst_dataset", "worst_delta", "deltas")}
    return {
        "name": m.name,
        "version": m.version,
        "task": m.task,
        "kind": m.model_kind,
        "precision": m.precision,
        "provider": PROVIDER_LABEL.get(served.provider, "cpu"),
        "sessions": served.sessions,
        "max_sequence_length": served.max_length,
        "labels": m.labels,
        "size_bytes": m.size_bytes,
        "created_at": m.created_at,
        "loaded_at": served.loaded_at,
        "teacher": versus.get("teacher"),
        "quality_delta_vs_teacher": quality,
        "speedup_vs_teacher": versus.get("speedup"),
        "user_tower": m.user_tower.model_dump() if m.user_tower else None,
        "validation": m.validation,
        "benchmark": m.benchmark,
    }


def _listing(service: Service) -> dict[str, Any]:
    failures = sorted(service.registry.failures.values(), key=lambda f: (f.name, int(f.version)))
    return {
        "models": [_entry(s) for s in service.registry.served()],
        "failures": [
            {"name": f.name, "version": f.version, "reason": f.reason, "message": f.message, "at": f.at}
            for f in failures
        ],
    }


@router.get("/models", response_model=ModelsResponse, responses=error_responses(401))
async def models(service: ServiceDep) -> ORJSONResponse:
    """What is served (with the manifest's validation and benchmark numbers) and what was refused."""
    return ORJSONResponse(_listing(service))


@router.post(
    "/models/reload",
    response_model=ReloadResponse,
    responses=error_responses(401, 403, 503),
    dependencies=[Depends(require_accepting)],
)
async def reload(service: ServiceDep) -> ORJSONResponse:
    """Rescan the store: newer (or newly pinned) versions are verified, warmed up and swapped in. An admin
    operation: needs INFERENCE_ADMIN_TOKEN as the bearer token, and answers 403 when the server has none."""
    changed = await service.reload()
    return ORJSONResponse({"changed": changed, **_listing(service)})
