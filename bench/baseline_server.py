"""The baseline: a FastAPI + transformers server written the way most tutorials do it.

PyTorch fp32, the model called inside an `async def` handler (so requests run one at a time), no batching
across requests, no ONNX. Same endpoints and response shapes as the service, same source checkpoints as
its artifacts: the fp32 sentiment teacher, and the packaged all-MiniLM-L6-v2 with mean pooling
for rank and recommend.

`BENCH_SENTIMENT_CHECKPOINT=checkpoints/review-sentiment-teacher \
    .venv/bin/uvicorn --factory bench.baseline_server:create_app --port 8001`
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

MAX_LENGTH = 128


class SentimentIn(BaseModel):
    texts: list[str]


class Item(BaseModel):
    id: str
    text: str
    weight: float = 1.0


class RankIn(BaseModel):
    query: str
    candidates: list[Item]
    top_k: int = 10


class RecommendIn(BaseModel):
    history: list[Item]
    candidates: list[Item]
    top_k: int = 20


def create_app(sentiment_checkpoint: Path | None = None, embedder_checkpoint: Path | None = None) -> FastAPI:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from bench.paths import minilm_path

    sentiment_dir = sentiment_checkpoint or Path(
        os.environ.get("BENCH_SENTIMENT_CHECKPOINT", "checkpoints/review-sentiment-teacher")
    )
    embedder_dir = embedder_checkpoint or Path(
        os.environ.get("BENCH_EMBEDDER_CHECKPOINT", "") or minilm_path()
    )

    threads = os.environ.get("BENCH_TORCH_THREADS")
    if threads:  # default: PyTorch's own choice (one thread per core), as a tutorial leaves it
        torch.set_num_threads(int(threads))

    app = FastAPI(title="baseline (PyTorch fp32, tutorial style)")
    sentiment_tokenizer = AutoTokenizer.from_pretrained(str(sentiment_dir))  # type: ignore[no-untyped-call]
    sentiment_model = AutoModelForSequenceClassification.from_pretrained(str(sentiment_dir)).eval()
    embed_tokenizer = AutoTokenizer.from_pretrained(str(embedder_dir))  # type: ignore[no-untyped-call]
    embed_model = AutoModel.from_pretrained(str(embedder_dir)).eval()
    id2label = sentiment_model.config.id2label

    def embed(texts: list[str]) -> Any:
        inputs = embed_tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        with torch.no_grad():
            hidden = embed_model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1)

    def ranked(items: list[Item], scores: Any, top_k: int) -> list[dict[str, Any]]:
        order = torch.argsort(scores, descending=True)[:top_k].tolist()
        return [{"id": items[i].id, "score": float(scores[i])} for i in order]

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/sentiment")
    async def sentiment(request: SentimentIn) -> dict[str, Any]:
        inputs = sentiment_tokenizer(
            request.texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        with torch.no_grad():
            probs = torch.softmax(sentiment_model(**inputs).logits, dim=-1)
        results = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            results.append(
                {
                    "label": id2label[best],
                    "score": row[best],
                    "probabilities": {id2label[i]: p for i, p in enumerate(row)},
                }
            )
        return {"model": "baseline-pytorch-fp32", "version": "0", "results": results}

    @app.post("/v1/rank")
    async def rank(request: RankIn) -> dict[str, Any]:
        vectors = embed([request.query] + [c.text for c in request.candidates])
        scores = vectors[1:] @ vectors[0]
        return {
            "model": "baseline-pytorch-fp32",
            "version": "0",
            "results": ranked(request.candidates, scores, request.top_k),
        }

    @app.post("/v1/recommend")
    async def recommend(request: RecommendIn) -> dict[str, Any]:
        history = embed([h.text for h in request.history])
        weights = torch.tensor([h.weight for h in request.history]).unsqueeze(1)
        user = torch.nn.functional.normalize((history * weights).sum(0), dim=0)
        scores = embed([c.text for c in request.candidates]) @ user
        return {
            "model": "baseline-pytorch-fp32",
            "version": "0",
            "results": ranked(request.candidates, scores, request.top_k),
        }

    return app
