"""The JSON inference endpoints: each declared once and answered by one path, without FastAPI's routing and
dependency solving (the per-request Python cost that mattered at thousands of requests per second).

`app.middleware.ServiceMiddleware` has already checked the headers and the bearer token and read the body;
`handle` decides everything else, for every request to the endpoint: the method, the server accepting work,
the content type, the JSON, its validation against the request model, and the answer or the error, which it
renders and counts exactly as the FastAPI routes' exception handlers do (`app.api.handlers`). The OpenAPI
document describes these endpoints from the same declarations (`add_to_openapi`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from app.api.dependencies import Call, close_call, open_call
from app.api.handlers import INTERNAL_ERROR_MESSAGE, count_unexpected, describe, describe_validation
from app.api.schemas import INFERENCE_ERRORS, ErrorResponse
from app.api.timing import Answer
from app.errors import InvalidRequest, MethodNotAllowed, ServiceError, UnsupportedMediaType, error_body
from app.metrics import Metrics
from app.middleware import Exchange, Headers, JsonHandler, Reply
from app.service import Service

Answerer = Callable[[Service, Any, Call], Awaitable[Answer]]


@dataclass(frozen=True)
class Endpoint:
    """A POST endpoint with a JSON body: what it takes, what it answers, the function that answers."""

    path: str
    request: type[BaseModel]
    response: type[BaseModel]
    answer: Answerer
    summary: str
    tags: tuple[str, ...] = ("inference",)
    errors: dict[int | str, dict[str, Any]] | None = None


def _headers(values: dict[str, str]) -> Headers:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in values.items()]


def _is_json(content_type: bytes | None) -> bool:
    """No content type, `application/json` or any `application/*+json` (what FastAPI parses as JSON)."""
    if content_type is None:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def _parse(body: bytes) -> Any:
    """The JSON document. orjson first (fast); the standard library when orjson refuses, because it also
    reads lone UTF-16 surrogates (`"\\ud83d"`), which are valid JSON: the text check then names the field."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        try:
            return json.loads(body)
        except ValueError:
            raise InvalidRequest(f"invalid JSON ({fast_error})", "body") from None


def json_handler(endpoint: Endpoint, service: Service, metrics: Metrics) -> JsonHandler:
    async def handle(exchange: Exchange) -> Reply:
        try:
            if exchange.scope["method"] != "POST":
                raise MethodNotAllowed(f"{endpoint.path} takes POST")
            service.check_accepting()
            content_type = None
            for key, value in exchange.scope["headers"]:
                if key == b"content-type":
                    content_type = value
            if not _is_json(content_type):
                raise UnsupportedMediaType(f"the body must be JSON (content-type {content_type!r})")
            try:
                body = endpoint.request.model_validate(_parse(exchange.body))
            except ValidationError as exc:
                raise InvalidRequest(describe_validation(exc.errors(), in_body=False)) from None
            call = open_call(service, exchange.started, exchange.receive)
            try:
                answer = await endpoint.answer(service, body, call)
            finally:
                close_call(call)
        except ServiceError as exc:
            status, headers = describe(exc, metrics, endpoint.path)
            if status == 405:
                headers["Allow"] = "POST"
            return Reply(status, orjson.dumps(error_body(exc.type, exc.message)), _headers(headers))
        except Exception as exc:
            count_unexpected(metrics, exc)
            return Reply(500, orjson.dumps(error_body("internal_error", INTERNAL_ERROR_MESSAGE)))
        served = answer.served
        return Reply(200, answer.body(), _headers(answer.headers()), served.name, served.version)

    return handle


def json_handlers(
    endpoints: Sequence[Endpoint], service: Service, metrics: Metrics
) -> dict[str, JsonHandler]:
    """{path: handler} for `app.middleware.ServiceMiddleware`."""
    return {e.path: json_handler(e, service, metrics) for e in endpoints}


def add_to_openapi(document: dict[str, Any], endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    """Describe `endpoints` in FastAPI's OpenAPI `document`: request and response schemas (with their
    examples), every error response, the bearer scheme."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    components.setdefault("securitySchemes", {})["HTTPBearer"] = {"type": "http", "scheme": "bearer"}

    def ref(model: type[BaseModel], mode: str) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)  # type: ignore[arg-type]
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error = {"application/json": {"schema": ref(ErrorResponse, "serialization")}}
    for endpoint in endpoints:
        responses: dict[str, Any] = {
            "200": {
                "description": "Successful Response",
                "content": {"application/json": {"schema": ref(endpoint.response, "serialization")}},
            }
        }
        for code, spec in {**INFERENCE_ERRORS, **(endpoint.errors or {})}.items():
            responses[str(code)] = {"description": spec["description"], "content": error}
        document.setdefault("paths", {})[endpoint.path] = {
            "post": {
                "tags": list(endpoint.tags),
                "summary": endpoint.summary,
                "operationId": endpoint.path.strip("/").replace("/", "_"),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref(endpoint.request, "validation")}},
                },
                "responses": responses,
                "security": [{"HTTPBearer": []}],
            }
        }
    return document
