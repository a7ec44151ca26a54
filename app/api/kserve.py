"""The Open Inference Protocol (KServe v2 / Triton HTTP) over the served models: health, server and model
metadata, model readiness, and infer with BYTES (UTF-8 text) inputs and FP32 outputs.

Tensors by model kind (`signature`): a classifier takes `text` [-1] and answers `probabilities`
[-1, labels]; a bi-encoder takes `text` [-1] and answers unit-length `embeddings` [-1, dim]; a cross-encoder
takes two inputs, `query` and `document` (element i of each is one pair; a single query goes with every
document), and answers `scores` [-1, 1]. Inference goes through `Service` like /v1 (same engine, cache,
limits). Inputs may use the binary tensor data extension (tritonclient's default); outputs are JSON.

Errors on these paths are the protocol's `{"error": "<message>"}` (tritonclient raises its
InferenceServerException from that string; the service's `{"error": {...}}` object would break its
message), with the service's status codes.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.api.dependencies import Call, CallDep, ServiceDep, bearer_token, require_accepting
from app.api.handlers import INTERNAL_ERROR_MESSAGE, count_unexpected, describe, describe_validation
from app.api.kserve_schemas import (
    InferRequest,
    InferResponse,
    KServeError,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
)
from app.api.kserve_tensors import HEADER_LENGTH, flat_texts, inline_binary_inputs
from app.api.responses import ORJSONResponse
from app.api.schemas import error_responses
from app.api.timing import Answer, model_response
from app.errors import InvalidRequest, ServiceError
from app.metrics import Metrics
from app.middleware import endpoint_label
from app.registry import ServedModel
from app.runtime import FloatArray
from app.service import Service, Timings

PLATFORM = "onnxruntime"
Tensor = dict[str, Any]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries with the protocol's error body."""
    return {code: {**spec, "model": KServeError} for code, spec in error_responses(*codes).items()}


class TensorRequest(Request):
    """A request whose body reads as plain JSON, also when it carries binary tensor data."""

    _inlined: bytes | None = None

    async def body(self) -> bytes:
        if self._inlined is None:
            self._inlined = inline_binary_inputs(await super().body(), self.headers.get(HEADER_LENGTH))
        return self._inlined


def _as_service_error(exc: Exception) -> ServiceError | None:
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, RequestValidationError):
        return InvalidRequest(describe_validation(exc.errors()))
    if isinstance(exc, StarletteHTTPException) and exc.status_code == 400:  # a body FastAPI cannot decode
        return InvalidRequest(str(exc.detail), "body")
    return None


def error_response(request: Request, exc: Exception) -> Response:
    metrics: Metrics = request.app.state.metrics
    error = _as_service_error(exc)
    if error is not None:
        status, headers = describe(error, metrics, endpoint_label(request.url.path))
        return ORJSONResponse({"error": error.message}, status_code=status, headers=headers)
    if isinstance(exc, StarletteHTTPException):
        return ORJSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)
    count_unexpected(metrics, exc)
    return ORJSONResponse({"error": INTERNAL_ERROR_MESSAGE}, status_code=500)


class KServeRoute(APIRoute):
    """A route that reads binary tensor data and answers every error in the protocol's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            request = TensorRequest(request.scope, request.receive)
            try:
                await request.body()  # here, so that a malformed binary part is a protocol error too
                return await handler(request)
            except Exception as exc:
                return error_response(request, exc)

        return handle


# tritonclient sends no Content-Type: read a body without one as JSON (strict_content_type=False).
model_router = APIRouter(
    prefix="/v2",
    tags=["kserve"],
    route_class=KServeRoute,
    dependencies=[Depends(bearer_token)],
    strict_content_type=False,
)
open_router = APIRouter(prefix="/v2", tags=["kserve"], route_class=KServeRoute)


def _text(name: str) -> Tensor:
    return {"name": name, "datatype": "BYTES", "shape": [-1]}


def _fp32(name: str, width: int) -> Tensor:
    return {"name": name, "datatype": "FP32", "shape": [-1, width]}


def signature(served: ServedModel) -> tuple[list[Tensor], list[Tensor]]:
    """The input and output tensors of a served model, by its kind (an embedding's width is not in the
    manifest: -1)."""
    if served.kind == "cross-encoder":
        return [_text("query"), _text("document")], [_fp32("scores", 1)]
    if served.kind == "sequence-classification":
        return [_text("text")], [_fp32("probabilities", len(served.manifest.labels or []))]
    return [_text("text")], [_fp32("embeddings", -1)]


def model_metadata(served: ServedModel) -> dict[str, Any]:
    inputs, outputs = signature(served)
    return {
        "name": served.name,
        "versions": [served.version],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {"kind": served.kind, "labels": served.manifest.labels},
    }


def input_texts(service: Service, body: InferRequest, served: ServedModel) -> dict[str, list[str]]:
    """{input name: texts} of a request, checked against the model's inputs and the service's limits."""
    expected = [t["name"] for t in signature(served)[0]]
    given = [t.name for t in body.inputs]
    if sorted(given) != sorted(expected):
        raise InvalidRequest(f"{served.name} takes inputs {expected}, not {given}", "inputs")
    texts: dict[str, list[str]] = {}
    for i, tensor in enumerate(body.inputs):
        if tensor.datatype != "BYTES":
            raise InvalidRequest(
                f"{tensor.datatype} given; inputs are BYTES (UTF-8 text)", f"inputs.{i}.datatype"
            )
        values = flat_texts(tensor.data, tensor.shape, f"inputs.{i}")
        if not values:
            raise InvalidRequest("at least one element is needed", f"inputs.{i}.data")
        service.check_texts(f"inputs.{i}.data", values)
        texts[tensor.name] = values
    return texts


async def _infer(
    service: Service, served: ServedModel, texts: dict[str, list[str]], call: Call
) -> tuple[str, FloatArray, ServedModel, Timings]:
    """The output tensor's name and values, and the model version that answered, with its timings."""
    name, version = served.name, served.version
    if served.kind == "cross-encoder":
        queries, documents = texts["query"], texts["document"]
        if len(queries) == 1:
            queries = queries * len(documents)
        scored = await service.score_pairs(
            queries, documents, name, version, call.deadline, call.disconnected, ("inputs", "inputs")
        )
        return "scores", scored.scores.reshape(-1, 1), scored.model, scored.timings
    if served.kind == "sequence-classification":
        classified = await service.sentiment(texts["text"], name, version, call.deadline, call.disconnected)
        return "probabilities", classified.probabilities, classified.model, classified.timings
    embedded = await service.embed(texts["text"], name, version, call.deadline, call.disconnected, "inputs")
    return "embeddings", embedded.vectors, embedded.model, embedded.timings


async def answer_infer(
    service: Service, body: InferRequest, call: Call, model: str, version: str | None
) -> Answer:
    """What the two infer routes answer."""
    served = service.registry.get(model, version)
    texts = input_texts(service, body, served)
    output_names = [t["name"] for t in signature(served)[1]]
    for j, wanted in enumerate(body.outputs or []):
        if wanted.name not in output_names:
            raise InvalidRequest(f"{served.name} has outputs {output_names}", f"outputs.{j}.name")
    output, values, answered, timings = await _infer(service, served, texts, call)
    tensor = {"name": output, "shape": list(values.shape), "datatype": "FP32", "data": np.ravel(values)}
    payload: dict[str, Any] = {"model_name": answered.name, "model_version": answered.version}
    if body.id is not None:
        payload["id"] = body.id
    payload["outputs"] = [tensor]
    return Answer(answered, timings, payload)


@open_router.get("/health/live", response_model=ServerLive, responses={503: {"model": ServerLive}})
async def live(service: ServiceDep) -> ORJSONResponse:
    """200 while the server is alive (like /livez)."""
    alive = not service.liveness()
    return ORJSONResponse({"live": alive}, status_code=200 if alive else 503)


@open_router.get("/health/ready", response_model=ServerReady, responses={503: {"model": ServerReady}})
async def ready(service: ServiceDep) -> ORJSONResponse:
    """200 when every default model is served and the server takes work (like /readyz)."""
    is_ready = service.readiness()[0]
    return ORJSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@open_router.get("", response_model=ServerMetadata)
async def server_metadata(request: Request) -> ORJSONResponse:
    """Server name, version and protocol extensions."""
    app = request.app
    return ORJSONResponse({"name": app.title, "version": app.version, "extensions": ["binary_tensor_data"]})


def _ready(service: Service, name: str, version: str | None) -> ORJSONResponse:
    served = service.registry.get(name, version)
    service.check_accepting()
    return ORJSONResponse({"name": served.name, "ready": True})


@model_router.get("/models/{name}", response_model=ModelMetadata, responses=errors(401, 404))
async def metadata(name: str, service: ServiceDep) -> ORJSONResponse:
    """A served model's version, platform and tensors."""
    return ORJSONResponse(model_metadata(service.registry.get(name)))


@model_router.get(
    "/models/{name}/versions/{version}", response_model=ModelMetadata, responses=errors(401, 404)
)
async def version_metadata(name: str, version: str, service: ServiceDep) -> ORJSONResponse:
    """The metadata of a model when `version` is the one being served (404 otherwise)."""
    return ORJSONResponse(model_metadata(service.registry.get(name, version)))


@model_router.get("/models/{name}/ready", response_model=ModelReady, responses=errors(401, 404, 503))
async def model_ready(name: str, service: ServiceDep) -> ORJSONResponse:
    """200 when the model is served and the server takes work; 404 or 503 otherwise."""
    return _ready(service, name, None)


@model_router.get(
    "/models/{name}/versions/{version}/ready", response_model=ModelReady, responses=errors(401, 404, 503)
)
async def version_ready(name: str, version: str, service: ServiceDep) -> ORJSONResponse:
    """200 when the model is served at `version` and the server takes work; 404 or 503 otherwise."""
    return _ready(service, name, version)


INFER_ERRORS = errors(400, 401, 404, 408, 413, 422, 429, 499, 500, 503, 504)
_ACCEPTING = [Depends(require_accepting)]


@model_router.post(
    "/models/{name}/infer", response_model=InferResponse, responses=INFER_ERRORS, dependencies=_ACCEPTING
)
async def infer(
    name: str, body: InferRequest, request: Request, service: ServiceDep, call: CallDep
) -> Response:
    """Run a model on BYTES (text) inputs; FP32 outputs."""
    return model_response(request, await answer_infer(service, body, call, name, None))


@model_router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferResponse,
    responses=INFER_ERRORS,
    dependencies=_ACCEPTING,
)
async def version_infer(
    name: str, version: str, body: InferRequest, request: Request, service: ServiceDep, call: CallDep
) -> Response:
    """Run a model at `version` (404 when another is being served)."""
    return model_response(request, await answer_infer(service, body, call, name, version))


router = APIRouter()
router.include_router(open_router)
router.include_router(model_router)
