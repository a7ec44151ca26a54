"""Shapes a model's answer: names model and version, carries per-stage timing headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request

from app.api.responses import ORJSONResponse
from app.registry import ServedModel
from app.service import Timings


@dataclass(frozen=True, slots=True)
class Answer:
    """An endpoint's successful answer, before it becomes a FastAPI response or raw ASGI messages."""

    served: ServedModel
    timings: Timings
    payload: dict[str, Any]

    def content(self) -> dict[str, Any]:
        return {"model": self.served.name, "version": self.served.version, **self.payload}

    def body(self) -> bytes:
        return orjson.dumps(self.content(), option=orjson.OPT_SERIALIZE_NUMPY)

    def headers(self) -> dict[str, str]:
        t = self.timings
        return {
            "x-model": self.served.name,
            "x-model-version": self.served.version,
            "x-queue-ms": f"{t.queue_s * 1000:.2f}",
            "x-tokenize-ms": f"{t.tokenize_s * 1000:.2f}",
            "x-inference-ms": f"{t.inference_s * 1000:.2f}",
        }


def model_response(request: Request, answer: Answer) -> ORJSONResponse:
    request.state.model = answer.served.name
    request.state.version = answer.served.version
    return ORJSONResponse(answer.content(), headers=answer.headers())
