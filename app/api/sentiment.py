"""POST /v1/sentiment"""

from __future__ import annotations

from app.api.dependencies import Call
from app.api.endpoints import Endpoint
from app.api.schemas import SentimentRequest, SentimentResponse
from app.api.timing import Answer
from app.service import Service


async def answer(service: Service, body: SentimentRequest, call: Call) -> Answer:
    out = await service.sentiment(body.texts, body.model, body.version, call.deadline, call.disconnected)
    labels = out.model.manifest.labels or []
    rows = out.probabilities.tolist()
    best = out.probabilities.argmax(axis=1).tolist() if rows else []
    results = [
        {
            "label": labels[k],
            "score": row[k],
            "probabilities": dict(zip(labels, row, strict=True)),
            "truncated": truncated,
        }
        for row, k, truncated in zip(rows, best, out.truncated, strict=True)
    ]
    return Answer(out.model, out.timings, {"results": results})


SENTIMENT = Endpoint(
    "/v1/sentiment",
    SentimentRequest,
    SentimentResponse,
    answer,
    "Classify review texts (label, probability per label, whether the text was truncated).",
)
