"""Request and response bodies of the HTTP API (the contract the storefront backend codes against)."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.settings import MAX_LIST_ITEMS, EventKind

VERSION_PATTERN = r"^[1-9][0-9]*$"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, min_length=1, max_length=128, description="Model name; the endpoint's default when absent."
    )
    version: str | None = Field(
        default=None,
        pattern=VERSION_PATTERN,
        description="Version that must answer; 404 when that version is not the one being served.",
    )


class SentimentRequest(_Request):
    texts: list[str] = Field(
        default=...,
        min_length=1,
        max_length=MAX_LIST_ITEMS,
        description="Review texts; limits: INFERENCE_MAX_TEXTS_PER_REQUEST, INFERENCE_MAX_CHARS_PER_TEXT.",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"texts": ["Battery died after two days.", "Great sound, fits well."]}]
        },
    )


class SentimentResult(BaseModel):
    label: str
    score: float = Field(..., description="Probability of `label`.")
    probabilities: dict[str, float]
    truncated: bool = Field(..., description="The text was cut to the model's max sequence length.")


class SentimentResponse(BaseModel):
    model: str
    version: str
    results: list[SentimentResult]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "review-sentiment",
                    "version": "1",
                    "results": [
                        {
                            "label": "negative",
                            "score": 0.956,
                            "probabilities": {"negative": 0.956, "positive": 0.044},
                            "truncated": False,
                        }
                    ],
                }
            ]
        }
    )


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., min_length=1, max_length=256)
    text: str


class HistoryEntry(Candidate):
    weight: float = Field(
        default=1.0,
        ge=0,
        allow_inf_nan=False,
        description="Relative weight of this item in the user vector (any finite non-negative number; only "
        "the ratios between weights matter), multiplied by its event's weight and the model's recency "
        "weight.",
    )
    event: EventKind | None = Field(
        default=None,
        description="What the user did with the item; each kind has a weight (setting "
        "`recommend_event_weights`); absent: weight 1.",
    )
    timestamp: AwareDatetime | float | None = Field(
        default=None,
        description="When it happened: Unix seconds or an ISO 8601 time with its offset. Given for every "
        "item or for none; the history is put in time order before recency weighs it (absent: the list is "
        "oldest first).",
    )


class RankRequest(_Request):
    query: str = Field(..., min_length=1)
    candidates: list[Candidate] = Field(..., min_length=1, max_length=MAX_LIST_ITEMS)
    top_k: int | None = Field(
        default=None, ge=1, description="Return only the best k candidates (all when absent)."
    )
    rerank_top_n: int | None = Field(
        default=None,
        ge=0,
        description="Re-score the bi-encoder's best N candidates with the cross-encoder reranker and put "
        "them first (two-stage ranking); 0: the bi-encoder alone. Absent: INFERENCE_RANK_RERANK_TOP_N when "
        "the reranker is served. At most INFERENCE_RANK_RERANK_MAX_TOP_N.",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "query": "wireless earbuds",
                    "candidates": [
                        {"id": "sku-1", "text": "Bluetooth 5.3 in-ear earbuds with charging case"},
                        {"id": "sku-2", "text": "Stainless steel chef knife, 8 inch"},
                    ],
                    "top_k": 10,
                }
            ]
        },
    )


class RecommendRequest(_Request):
    history: list[HistoryEntry] = Field(
        ..., min_length=1, max_length=MAX_LIST_ITEMS, description="What the user had, oldest first."
    )
    candidates: list[Candidate] = Field(..., min_length=1, max_length=MAX_LIST_ITEMS)
    top_k: int | None = Field(
        default=None, ge=1, description="Return only the best k candidates (all when absent)."
    )
    exclude_history: bool = Field(
        default=True,
        description="Leave out candidates whose id is in the history (listed in `excluded`); false scores "
        "them like any other.",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "history": [
                        {"id": "sku-9", "text": "Trail running shoes, waterproof", "event": "purchase"},
                        {"id": "sku-4", "text": "Merino wool hiking socks", "event": "view", "weight": 0.5},
                    ],
                    "candidates": [
                        {"id": "sku-1", "text": "Lightweight hiking backpack 30L"},
                        {"id": "sku-2", "text": "Espresso machine with milk frother"},
                        {"id": "sku-4", "text": "Merino wool hiking socks"},
                    ],
                    "top_k": 20,
                }
            ]
        },
    )


class ScoredItem(BaseModel):
    id: str
    score: float
    truncated: bool


class ScoredResponse(BaseModel):
    model: str
    version: str
    results: list[ScoredItem] = Field(..., description="Best first.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "product-embedder",
                    "version": "1",
                    "results": [
                        {"id": "sku-2", "score": 0.583, "truncated": False},
                        {"id": "sku-3", "score": 0.481, "truncated": False},
                    ],
                }
            ]
        }
    )


class RankStage(BaseModel):
    model: str
    version: str
    kind: str = Field(..., description="bi-encoder or cross-encoder")
    candidates: int = Field(..., description="How many candidates this stage scored.")


class RankResponse(ScoredResponse):
    stages: list[RankStage] = Field(
        ...,
        description="The stages that ran, in order. After a cross-encoder second stage of N candidates, the "
        "first N results carry its scores and the rest the first stage's (scores compare within a stage).",
    )


class RecommendResponse(ScoredResponse):
    excluded: list[str] = Field(
        default_factory=list, description="Candidate ids left out because they are in the history."
    )


class QualityDelta(BaseModel):
    metric: str = Field(description="accuracy (classifiers, percent) or ndcg@10_vs_source (rankers)")
    worst_dataset: str
    worst_delta: float = Field(description="artifact minus teacher on the worst gate set")
    deltas: dict[str, float] = Field(description="artifact minus teacher on each gate set")


class ModelEntry(BaseModel):
    name: str
    version: str
    task: str
    kind: str
    precision: str
    provider: str
    sessions: int
    max_sequence_length: int
    labels: list[str] | None
    size_bytes: int | None
    created_at: str | None
    loaded_at: str
    teacher: str | None = Field(
        default=None, description="The fp32 model this artifact was converted, pruned or distilled from."
    )
    quality_delta_vs_teacher: QualityDelta | None = Field(
        default=None, description="The gate's headline metric against the teacher (None: not recorded)."
    )
    speedup_vs_teacher: dict[str, float] | None = Field(
        default=None,
        description="Latency of the PyTorch fp32 teacher over this artifact's, by batch size and sequence "
        "length (`batch1_seq64`, `batch8_seq64`), one thread each, from the build's benchmark.",
    )
    user_tower: dict[str, Any] | None = Field(
        default=None,
        description="Bi-encoders: how /v1/recommend weighs a history with this model "
        "(`recency_half_life`: items; null: a plain mean).",
    )
    validation: dict[str, Any] | None = Field(default=None, description="The manifest's validation results.")
    benchmark: dict[str, Any] | None = Field(default=None, description="The manifest's benchmark results.")


class LoadFailureEntry(BaseModel):
    name: str
    version: str
    reason: str
    message: str
    at: str


class ModelsResponse(BaseModel):
    models: list[ModelEntry]
    failures: list[LoadFailureEntry] = Field(..., description="Versions refused at load, with the reason.")


class ReloadResponse(BaseModel):
    changed: list[str] = Field(..., description="`name/version` of every version swapped in.")
    models: list[ModelEntry]
    failures: list[LoadFailureEntry]


class HealthResponse(BaseModel):
    status: str
    problems: list[str] = []


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "A header that must appear once (authorization, content-type) appears more than once.",
    401: "Missing or wrong bearer token (only when INFERENCE_API_TOKEN is set).",
    403: "Model reload is off: the server has no INFERENCE_ADMIN_TOKEN.",
    408: "The request body did not arrive within INFERENCE_BODY_TIMEOUT_S.",
    404: "Unknown model, or a version that is not being served.",
    405: "A method other than POST.",
    413: "Request body larger than INFERENCE_MAX_BODY_BYTES.",
    415: "A content type other than JSON (application/json, application/*+json, or none).",
    422: "Malformed JSON, a wrong type, a limit exceeded, an empty text or one that is not valid Unicode "
    "(a lone surrogate); the message names the field.",
    429: "The model's queue is full; retry after the Retry-After header's seconds.",
    499: "The client disconnected before the answer was ready (logged, never read).",
    500: "Inference failed.",
    503: "The server is loading its models or shutting down.",
    504: "The request deadline (INFERENCE_REQUEST_TIMEOUT_S) passed.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses, all with the ErrorResponse body."""
    return {code: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[code]} for code in codes}


INFERENCE_ERRORS = error_responses(400, 401, 404, 405, 408, 413, 415, 422, 429, 499, 500, 503, 504)
