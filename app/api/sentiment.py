"""POST /v1/sentiment"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.api.dependencies import Call, CallDep, ServiceDep, bearer_token, require_accepting
from app.api.schemas import INFERENCE_ERRORS, SentimentRequest, SentimentResponse
from app.api.timing import Answer, model_response
from app.service import Service

router = APIRouter(
    prefix="/v1", tags=["inference"], dependencies=[Depends(bearer_token), Depends(require_accepting)]
)


async def answer(service: Service, body: SentimentRequest, call: Call) -> Answer:
    """What both the FastAPI route and the fast handler (app.api.hotpath) answer."""
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


@router.post("/sentiment", response_model=SentimentResponse, responses=INFERENCE_ERRORS)
async def sentiment(body: SentimentRequest, request: Request, service: ServiceDep, call: CallDep) -> Response:
    """Classify review texts (label, probability per label, whether the text was truncated)."""
    return model_response(request, await answer(service, body, call))
