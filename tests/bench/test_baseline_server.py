"""The PyTorch baseline server on tiny random BERTs, through FastAPI's TestClient (lifespan runs)."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench.baseline_server import create_app


@pytest.fixture(scope="module")
def client(tiny_checkpoints: dict[str, Path]) -> TestClient:
    app = create_app(tiny_checkpoints["sequence-classification"], tiny_checkpoints["bi-encoder"])
    return TestClient(app)


def test_sentiment_answers_in_the_service_shape(client: TestClient) -> None:
    response = client.post("/v1/sentiment", json={"texts": ["great phone", "the battery died"]})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 2
    for result in results:
        assert result["label"] in ("negative", "positive")
        assert set(result["probabilities"]) == {"negative", "positive"}
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert result["score"] == max(result["probabilities"].values())


def test_rank_orders_by_cosine_and_keeps_top_k(client: TestClient) -> None:
    candidates = [
        {"id": f"c{i}", "text": t}
        for i, t in enumerate(
            ["red velvet sofa", "oak dining table", "wireless earbuds", "garden chair", "brass lamp"]
        )
    ]
    response = client.post(
        "/v1/rank", json={"query": "wireless earbuds", "candidates": candidates, "top_k": 3}
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 3
    assert results[0]["id"] == "c2"  # the identical text has cosine 1
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-5)
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def test_recommend_weights_history_into_one_user_vector(client: TestClient) -> None:
    history = [{"id": "h1", "text": "brass lamp", "weight": 1.0}]
    candidates = [{"id": "a", "text": "garden chair"}, {"id": "b", "text": "brass lamp"}]
    response = client.post("/v1/recommend", json={"history": history, "candidates": candidates, "top_k": 2})
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == ["b", "a"]


def test_ready_and_bad_input(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200
    assert client.post("/v1/sentiment", json={"texts": "not a list"}).status_code == 422
