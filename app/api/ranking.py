"""POST /v1/rank and POST /v1/recommend"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from app.api.dependencies import Call
from app.api.endpoints import Endpoint
from app.api.schemas import Candidate, RankRequest, RankResponse, RecommendRequest, RecommendResponse
from app.api.timing import Answer
from app.errors import InvalidRequest
from app.service import HistoryItem, Scored, Service


def _unique_ids(candidates: Sequence[Candidate], field: str) -> None:
    seen: set[str] = set()
    for i, c in enumerate(candidates):
        if c.id in seen:
            raise InvalidRequest(f"duplicate id {c.id!r}", f"{field}.{i}.id")
        seen.add(c.id)


def _results(candidates: Sequence[Candidate], scored: Scored) -> list[dict[str, object]]:
    scores = scored.scores.tolist()
    return [
        {"id": candidates[i].id, "score": scores[i], "truncated": scored.truncated[i]} for i in scored.order
    ]


async def answer_rank(service: Service, body: RankRequest, call: Call) -> Answer:
    _unique_ids(body.candidates, "candidates")
    scored = await service.rank(
        body.query,
        [c.text for c in body.candidates],
        body.top_k,
        body.model,
        body.version,
        call.deadline,
        call.disconnected,
        body.rerank_top_n,
    )
    stages = [
        {"model": s.model.name, "version": s.model.version, "kind": s.model.kind, "candidates": s.candidates}
        for s in scored.stages
    ]
    return Answer(
        scored.model, scored.timings, {"results": _results(body.candidates, scored), "stages": stages}
    )


async def answer_recommend(service: Service, body: RecommendRequest, call: Call) -> Answer:
    _unique_ids(body.candidates, "candidates")
    owned = {h.id for h in body.history} if body.exclude_history else set()
    excluded = [i for i, c in enumerate(body.candidates) if c.id in owned]
    history = [HistoryItem(h.text, h.weight, h.event, _unix_seconds(h.timestamp)) for h in body.history]
    scored = await service.recommend(
        history,
        [c.text for c in body.candidates],
        body.top_k,
        body.model,
        body.version,
        call.deadline,
        call.disconnected,
        excluded,
    )
    kept = [body.candidates[i] for i in scored.kept]
    return Answer(
        scored.model,
        scored.timings,
        {"results": _results(kept, scored), "excluded": [body.candidates[i].id for i in scored.excluded]},
    )


def _unix_seconds(timestamp: datetime | float | None) -> float | None:
    return timestamp.timestamp() if isinstance(timestamp, datetime) else timestamp


RANK = Endpoint(
    "/v1/rank",
    RankRequest,
    RankResponse,
    answer_rank,
    "Order candidate products by relevance to a search query: bi-encoder cosine, its best N re-scored by the "
    "cross-encoder reranker (two-stage), or a cross-encoder alone.",
)
RECOMMEND = Endpoint(
    "/v1/recommend",
    RecommendRequest,
    RecommendResponse,
    answer_recommend,
    "Order candidates by similarity to the user vector: the mean of the history's embeddings weighted by "
    "recency (the model's user tower), event kind and the request's weights; history items are left out.",
)
