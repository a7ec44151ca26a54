"""POST /v1/rerank and POST /v2/rerank in the Cohere / Jina rerank shape (one implementation, two paths:
Cohere's v1 and v2 SDK clients and Jina's).

Served by `Service.rank`: the cross-encoder (`Service.default_reranker`) or a bi-encoder, with the limits,
engine and embedding cache of /v1/rank.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.api.dependencies import Call
from app.api.endpoints import Endpoint
from app.api.schemas import VERSION_PATTERN
from app.api.timing import Answer
from app.logs import request_id_var
from app.service import Service
from app.settings import MAX_LIST_ITEMS


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "query": "wireless earbuds",
                    "documents": [
                        "Stainless steel chef knife",
                        "Bluetooth in-ear earbuds with charging case",
                    ],
                    "top_n": 1,
                    "return_documents": True,
                }
            ]
        },
    )

    query: str = Field(..., min_length=1)
    documents: list[str | RerankDocument] = Field(
        ...,
        min_length=1,
        max_length=MAX_LIST_ITEMS,
        description="Texts, or objects with a `text` (limits: INFERENCE_MAX_TEXTS_PER_REQUEST, "
        "INFERENCE_MAX_CHARS_PER_TEXT).",
    )
    top_n: int | None = Field(None, ge=1, description="Return only the best n (all when absent).")
    return_documents: bool = Field(False, description='Echo each result\'s document as `{"text": ...}`.')
    model: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="A served cross-encoder or bi-encoder. Absent: product-reranker when it is served, "
        "else INFERENCE_RANKING_MODEL.",
    )
    version: str | None = Field(
        None,
        pattern=VERSION_PATTERN,
        description="Not Cohere's: the version that must answer (404 if another).",
    )
    max_tokens_per_doc: int | None = Field(
        None,
        ge=1,
        description="Accepted and ignored: documents are cut at the model's max sequence length "
        "(reported in meta.warnings).",
    )
    priority: int | None = Field(None, description="Accepted and ignored (one queue per model).")


class RerankedDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int = Field(..., description="Position of the document in the request.")
    relevance_score: float = Field(
        ..., description="Cross-encoder: a probability in [0, 1]. Bi-encoder: cosine similarity in [-1, 1]."
    )
    document: RerankedDocument | None = Field(None, description="Only with return_documents.")


class RerankMeta(BaseModel):
    warnings: list[str] = Field(default_factory=list, description="Documents cut to the max sequence length.")


class RerankResponse(BaseModel):
    id: str = Field(..., description="The request id (x-request-id).")
    model: str
    version: str
    results: list[RerankResult] = Field(..., description="Best first.")
    meta: RerankMeta

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f2a9c1b7d4e-1",
                    "model": "product-reranker",
                    "version": "1",
                    "results": [{"index": 1, "relevance_score": 0.93}],
                    "meta": {"warnings": []},
                }
            ]
        }
    )


async def answer_rerank(service: Service, body: RerankRequest, call: Call) -> Answer:
    """What /v1/rerank and /v2/rerank answer."""
    texts = [d if isinstance(d, str) else d.text for d in body.documents]
    service.check_texts("documents", texts)  # named as in this request; Service.rank would say "candidates"
    model = body.model if body.model is not None else service.default_reranker()
    scored = await service.rank(
        body.query, texts, body.top_n, model, body.version, call.deadline, call.disconnected
    )
    scores = scored.scores.tolist()
    results: list[dict[str, object]] = []
    for i in scored.order:
        result: dict[str, object] = {"index": i, "relevance_score": scores[i]}
        if body.return_documents:
            result["document"] = {"text": texts[i]}
        results.append(result)
    cut = [i for i, truncated in enumerate(scored.truncated) if truncated]
    warnings = [f"documents {cut} were cut to the model's max sequence length"] if cut else []
    payload = {"id": request_id_var.get(), "results": results, "meta": {"warnings": warnings}}
    return Answer(scored.model, scored.timings, payload)


RERANK_V1 = Endpoint(
    "/v1/rerank",
    RerankRequest,
    RerankResponse,
    answer_rerank,
    "Rerank documents for a query in the Cohere/Jina shape (the cross-encoder when served).",
    tags=("rerank",),
)
RERANK_V2 = Endpoint(
    "/v2/rerank",
    RerankRequest,
    RerankResponse,
    answer_rerank,
    "The same as /v1/rerank, at the path of Cohere's v2 client.",
    tags=("rerank",),
)
