"""Shapes a model's answer: names model and version, carries per-stage timing headers."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from app.api.responses import ORJSONResponse
from app.registry import ServedModel
from app.service import Timings


def model_response(
    request: Request, served: ServedModel, timings: Timings, payload: dict[str, Any]
) -> ORJSONResponse:
    request.state.model = served.name
    request.state.version = served.version
    headers = {
        "x-model": served.name,
        "x-model-version": served.version,
        "x-queue-ms": f"{timings.queue_s * 1000:.2f}",
        "x-tokenize-ms": f"{timings.tokenize_s * 1000:.2f}",
        "x-inference-ms": f"{timings.inference_s * 1000:.2f}",
    }
    return ORJSONResponse({"model": served.name, "version": served.version, **payload}, headers=headers)
