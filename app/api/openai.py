"""POST /v1/embeddings in OpenAI's shape, for the `openai` SDK and the tools built on it.

Served by `Service.embed`: the bi-encoder, its engine and the embedding cache of /v1/rank and /v1/recommend.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from app.api.dependencies import Call
from app.api.endpoints import Endpoint
from app.api.schemas import VERSION_PATTERN
from app.api.timing import Answer
from app.errors import InvalidRequest
from app.runtime import FloatArray
from app.service import Service, shorten
from app.settings import MAX_LIST_ITEMS

Texts = Annotated[list[str], Field(max_length=MAX_LIST_ITEMS)]
TokenIds = Annotated[list[int], Field(max_length=MAX_LIST_ITEMS)]
TokenIdLists = Annotated[list[list[int]], Field(max_length=MAX_LIST_ITEMS)]


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"model": "product-embedder", "input": ["wireless earbuds", "Bluetooth in-ear earbuds"]},
                {"model": "product-embedder", "input": "wireless earbuds", "dimensions": 128},
            ]
        },
    )

    input: str | Texts | TokenIds | TokenIdLists = Field(
        ...,
        description="A text or a list of texts (limits: INFERENCE_MAX_TEXTS_PER_REQUEST, "
        "INFERENCE_MAX_CHARS_PER_TEXT). Token-id arrays are refused (422): send texts.",
    )
    model: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="A served bi-encoder; INFERENCE_RANKING_MODEL when absent (OpenAI's SDK sends one).",
    )
    version: str | None = Field(
        None,
        pattern=VERSION_PATTERN,
        description="Not OpenAI's: the version that must answer (404 if another).",
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`base64`: each embedding as the base64 of its little-endian float32 bytes."
    )
    dimensions: int | None = Field(
        None,
        ge=1,
        description="Keep the first N components, scaled back to unit length (422 above the model's).",
    )
    user: str | None = Field(None, description="Accepted and ignored.")


class EmbeddingItem(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(..., description="Floats, or base64 with encoding_format=base64.")


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int = Field(
        ..., description="Tokens the model read for the input texts (special tokens included, truncated)."
    )
    total_tokens: int = Field(..., description="The same as prompt_tokens (embeddings generate nothing).")


class EmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingItem]
    model: str
    version: str
    usage: EmbeddingsUsage

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.021, -0.113, 0.087]}],
                    "model": "product-embedder",
                    "version": "1",
                    "usage": {"prompt_tokens": 5, "total_tokens": 5},
                }
            ]
        }
    )


def texts_of(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    """The request's texts; refuses token-id arrays and an empty list."""
    if isinstance(value, str):
        return [value]
    if not value:
        raise InvalidRequest("at least one text is needed", "input")
    if not all(isinstance(v, str) for v in value):
        raise InvalidRequest("token-id arrays are not supported: send the texts", "input")
    return [v for v in value if isinstance(v, str)]


def to_base64(vector: FloatArray) -> str:
    """OpenAI's base64 encoding: the little-endian float32 bytes of the vector."""
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


async def answer_embeddings(service: Service, body: EmbeddingsRequest, call: Call) -> Answer:
    """Embeddings of the request's texts in OpenAI's response shape (plus the service's `version`); `usage`
    counts the tokens the model read for them (a cached text counts what it counted when computed)."""
    texts = texts_of(body.input)
    out = await service.embed(texts, body.model, body.version, call.deadline, call.disconnected, "input")
    vectors = out.vectors
    if body.dimensions is not None:
        size = vectors.shape[1]
        if body.dimensions > size:
            raise InvalidRequest(f"{body.dimensions} is more than the model's {size}", "dimensions")
        vectors = shorten(vectors, body.dimensions)
    data: list[dict[str, Any]] = [
        {
            "object": "embedding",
            "index": i,
            "embedding": to_base64(v) if body.encoding_format == "base64" else v,
        }
        for i, v in enumerate(vectors)
    ]
    used = sum(out.tokens)
    usage = {"prompt_tokens": used, "total_tokens": used}
    return Answer(out.model, out.timings, {"object": "list", "data": data, "usage": usage})


EMBEDDINGS = Endpoint(
    "/v1/embeddings",
    EmbeddingsRequest,
    EmbeddingsResponse,
    answer_embeddings,
    "Unit-length embeddings of texts, in OpenAI's embeddings shape (a served bi-encoder).",
    tags=("openai",),
)
