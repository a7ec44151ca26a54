"""POST /v1/rank and POST /v1/recommend"""

from __future__ import annotations

from collections.abc import Sequence

from app.api.dependencies import Call
from app.api.endpoints import Endpoint
from app.api.schemas import Candidate, RankRequest, RecommendRequest, ScoredResponse
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
    )
    return Answer(scored.model, scored.timings, {"results": _results(body.candidates, scored)})


async def answer_recommend(service: Service, body: RecommendRequest, call: Call) -> Answer:
    _unique_ids(body.candidates, "candidates")
    history = [HistoryItem(h.text, h.weight) for h in body.history]
    scored = await service.recommend(
        history,
        [c.text for c in body.candidates],
        body.top_k,
        body.model,
        body.version,
        call.deadline,
        call.disconnected,
    )
    return Answer(scored.model, scored.timings, {"results": _results(body.candidates, scored)})


RANK = Endpoint(
    "/v1/rank",
    RankRequest,
    ScoredResponse,
    answer_rank,
    "Order candidate products by relevance to a search query (bi-encoder cosine, or a cross-encoder).",
)
RECOMMEND = Endpoint(
    "/v1/recommend",
    RecommendRequest,
    ScoredResponse,
    answer_recommend,
    "Order candidates by similarity to the user vector (weighted mean of the history's embeddings).",
)
