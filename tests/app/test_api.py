"""In-process API tests (TestClient runs the real lifespan, sessions and engine)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

TOKEN = "t" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CANDIDATES = [
    {"id": "sku-1", "text": "wireless earbuds with charging case"},
    {"id": "sku-2", "text": "stainless steel chef knife"},
    {"id": "sku-3", "text": "noise cancelling over ear headphones"},
]


@pytest.fixture(scope="module")
def client(tiny_store: Any) -> Iterator[TestClient]:
    settings = Settings(
        model_store=tiny_store,
        sessions_per_model=1,
        api_token=TOKEN,  # type: ignore[arg-type]
        max_texts_per_request=8,
        max_chars_per_text=200,
        max_body_bytes=4096,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def post(client: TestClient, path: str, body: Any) -> Any:
    return client.post(path, json=body, headers=AUTH)


def test_sentiment_names_model_and_version_with_timing_headers(client: TestClient) -> None:
    r = post(client, "/v1/sentiment", {"texts": ["great sound", "broke after a week"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"]) == ("review-sentiment", "1")
    assert [set(x["probabilities"]) for x in body["results"]] == [{"negative", "positive"}] * 2
    for item in body["results"]:
        assert item["score"] == max(item["probabilities"].values())
        assert item["label"] == max(item["probabilities"], key=item["probabilities"].get)
    for header in ("x-request-id", "x-queue-ms", "x-tokenize-ms", "x-inference-ms", "x-total-ms"):
        assert header in r.headers


def test_request_id_is_kept_when_the_caller_sends_one(client: TestClient) -> None:
    r = client.get("/livez", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


def test_rank_with_bi_encoder_and_cross_encoder(client: TestClient) -> None:
    bi = post(client, "/v1/rank", {"query": "earbuds", "candidates": CANDIDATES, "top_k": 2}).json()
    assert bi["model"] == "product-embedder"
    assert len(bi["results"]) == 2
    assert bi["results"][0]["score"] >= bi["results"][1]["score"]
    cross = post(
        client, "/v1/rank", {"query": "earbuds", "candidates": CANDIDATES, "model": "product-reranker"}
    )
    body = cross.json()
    assert body["model"] == "product-reranker"
    assert sorted(x["id"] for x in body["results"]) == ["sku-1", "sku-2", "sku-3"]
    scores = [x["score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_recommend_and_the_embedding_cache(client: TestClient) -> None:
    body = {
        "history": [
            {"id": "h1", "text": "bluetooth headphones", "weight": 2.0},
            {"id": "h2", "text": "phone case"},
        ],
        "candidates": CANDIDATES,
    }
    first = post(client, "/v1/recommend", body)
    assert first.status_code == 200, first.text
    second = post(client, "/v1/recommend", body)
    assert first.json()["results"] == second.json()["results"]
    metrics = client.get("/metrics").text
    hits = [line for line in metrics.splitlines() if line.startswith("inference_embedding_cache_hits_total{")]
    assert hits
    assert float(hits[0].split()[-1]) >= 5  # the whole second request came from the cache


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/sentiment", {"texts": [1]}, "texts.0"),
        ("/v1/sentiment", {"text": ["a"]}, "texts"),
        ("/v1/sentiment", {"texts": []}, "texts"),
        ("/v1/rank", {"query": "q", "candidates": [{"id": "a"}]}, "candidates.0.text"),
        ("/v1/rank", {"query": "q", "candidates": CANDIDATES, "top_k": 0}, "top_k"),
        ("/v1/sentiment", {"texts": ["a"] * 9}, "texts"),
        ("/v1/sentiment", {"texts": ["a", "b" * 201]}, "texts.1"),
        ("/v1/rank", {"query": "q", "candidates": [CANDIDATES[0], CANDIDATES[0]]}, "candidates.1.id"),
        (
            "/v1/recommend",
            {"history": [{"id": "h", "text": "x", "weight": 0}], "candidates": CANDIDATES},
            "history",
        ),
        (
            "/v1/recommend",
            {"history": [{"id": "h", "text": "x"}], "candidates": CANDIDATES, "model": "product-reranker"},
            "model",
        ),
        ("/v1/sentiment", {"texts": ["a"], "model": "product-embedder"}, "model"),
    ],
)
def test_invalid_requests_get_422_naming_the_field(
    client: TestClient, path: str, body: Any, field: str
) -> None:
    r = post(client, path, body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["message"].startswith(field), error["message"]


def test_malformed_json_is_422(client: TestClient) -> None:
    r = client.post(
        "/v1/sentiment", content=b'{"texts": ["a"', headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 422
    assert "invalid JSON" in r.json()["error"]["message"]


def test_unknown_model_or_version_is_404(client: TestClient) -> None:
    assert post(client, "/v1/sentiment", {"texts": ["a"], "model": "nope"}).status_code == 404
    r = post(client, "/v1/sentiment", {"texts": ["a"], "version": "7"})
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "model_not_found"


def test_oversized_body_is_413(client: TestClient) -> None:
    r = post(client, "/v1/sentiment", {"texts": ["x" * 5000]})
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "body_too_large"
    assert "x-request-id" in r.headers


def test_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Any:
        yield b'{"texts": ["'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"]}'

    headers = {**AUTH, "content-type": "application/json"}
    r = client.post("/v1/sentiment", content=chunks(), headers=headers)
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "body_too_large"


def test_bearer_token_guards_v1_but_not_health(client: TestClient) -> None:
    assert client.post("/v1/sentiment", json={"texts": ["a"]}).status_code == 401
    wrong = client.post(
        "/v1/sentiment", json={"texts": ["a"]}, headers={"Authorization": "Bearer " + "u" * 24}
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "unauthorized"
    assert client.get("/v1/models").status_code == 401
    for path in ("/livez", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path


def test_models_lists_what_is_served(client: TestClient) -> None:
    body = client.get("/v1/models", headers=AUTH).json()
    names = {m["name"]: m for m in body["models"]}
    assert set(names) == {"review-sentiment", "product-embedder", "product-recommender", "product-reranker"}
    assert names["review-sentiment"]["kind"] == "sequence-classification"
    assert names["review-sentiment"]["precision"] == "int8"
    assert names["product-embedder"]["validation"] is not None
    assert body["failures"] == []
    sentiment = names["review-sentiment"]
    assert sentiment["teacher"].endswith("sequence-classification")  # the tiny source checkpoint
    quality = sentiment["quality_delta_vs_teacher"]
    assert quality["metric"] == "accuracy"
    assert set(quality["deltas"]) == {m["dataset"] for m in sentiment["validation"]["metrics"]}
    assert quality["worst_delta"] == min(quality["deltas"].values())
    assert names["product-embedder"]["quality_delta_vs_teacher"]["metric"] == "ndcg@10_vs_source"


def test_openapi_documents_every_error_response(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/sentiment", "/v1/rank", "/v1/recommend"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"200", "401", "404", "413", "422", "429", "503", "504"} <= set(responses), path
        ref = responses["422"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorResponse")
    assert spec["components"]["schemas"]["RankRequest"]["examples"]


def test_metrics_expose_the_contract_names(client: TestClient) -> None:
    post(client, "/v1/sentiment", {"texts": ["a"]})
    text = client.get("/metrics").text
    for name in (
        "inference_request_duration_seconds_bucket",
        "inference_queue_wait_seconds_bucket",
        "inference_tokenize_seconds_bucket",
        "inference_model_run_seconds_bucket",
        "inference_batch_size_bucket",
        "inference_batch_tokens_bucket",
        "inference_padding_ratio_bucket",
        "inference_queue_depth",
        "inference_in_flight_requests",
        "inference_rejected_requests_total",
        "inference_model_info",
        "inference_ready 1.0",
    ):
        assert name in text, name
    counts = "inference_request_duration_seconds_count"
    durations = [line for line in text.splitlines() if line.startswith(counts)]
    assert any('model="review-sentiment"' in line and 'status="200"' in line for line in durations)


def test_draining_refuses_new_work_with_503(tiny_store: Any, make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings())) as c:
        assert c.get("/readyz").status_code == 200
        c.app.state.service.begin_drain()  # type: ignore[attr-defined]
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert "draining" in ready.json()["problems"]
        r = c.post("/v1/sentiment", json={"texts": ["a"]})
        assert r.status_code == 503
        assert r.json()["error"]["type"] == "draining"
