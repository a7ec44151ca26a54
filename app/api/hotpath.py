"""Fast handlers of the POST /v1 inference endpoints, called by `app.middleware.ServiceMiddleware`
instead of FastAPI's routing and dependency solving (the per-request Python cost that mattered).

The middleware has already checked the headers and the bearer token and read the body. A handler answers
only requests that FastAPI would have answered the same way: server accepting work, a JSON content type, a
body that parses and validates. For anything else it declines and FastAPI answers (503, and the exact 422
bodies of malformed JSON or failed validation). Once the request is accepted, the endpoint logic is the
same function the FastAPI route calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from app.api import ranking, sentiment
from app.api.dependencies import Call, close_call, open_call
from app.api.handlers import INTERNAL_ERROR_MESSAGE, count_unexpected, describe
from app.api.schemas import RankRequest, RecommendRequest, SentimentRequest
from app.api.timing import Answer
from app.errors import ServiceError, error_body
from app.metrics import Metrics
from app.middleware import Exchange, FastHandler, Headers, Reply
from app.service import Service

Endpoint = Callable[[Service, Any, Call], Awaitable[Answer]]


def _headers(values: dict[str, str]) -> Headers:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in values.items()]


def _is_json(content_type: bytes) -> bool:
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def fast_handler(
    service: Service, metrics: Metrics, path: str, model: type[BaseModel], endpoint: Endpoint
) -> FastHandler:
    async def handle(exchange: Exchange) -> Reply | None:
        content_type = b""
        for key, value in exchange.scope["headers"]:
            if key == b"content-type":
                content_type = value
        if service.draining or not service.started or not _is_json(content_type):
            return None
        try:
            data = orjson.loads(exchange.body)
            body = model.model_validate(data) if isinstance(data, dict) else None
        except (orjson.JSONDecodeError, ValidationError):
            return None
        if body is None:
            return None
        call = open_call(service, exchange.started, exchange.receive)
        try:
            answer = await endpoint(service, body, call)
        except ServiceError as exc:
            status, headers = describe(exc, metrics, path)
            return Reply(status, orjson.dumps(error_body(exc.type, exc.message)), _headers(headers))
        except Exception as exc:
            count_unexpected(metrics, exc)
            return Reply(500, orjson.dumps(error_body("internal_error", INTERNAL_ERROR_MESSAGE)))
        finally:
            close_call(call)
        served = answer.served
        return Reply(200, answer.body(), _headers(answer.headers()), served.name, served.version)

    return handle


def fast_routes(service: Service, metrics: Metrics) -> dict[str, FastHandler]:
    """{path: handler} of the endpoints answered without FastAPI (POST only)."""
    table: list[tuple[str, type[BaseModel], Endpoint]] = [
        ("/v1/sentiment", SentimentRequest, sentiment.answer),
        ("/v1/rank", RankRequest, ranking.answer_rank),
        ("/v1/recommend", RecommendRequest, ranking.answer_recommend),
    ]
    return {path: fast_handler(service, metrics, path, model, fn) for path, model, fn in table}
