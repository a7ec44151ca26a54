"""POST /v1/recommend: the user tower (recency, events, weights, time order) and leaving out owned items."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.user_vector import recency_weights

HISTORY = [
    {"id": "h1", "text": "bluetooth headphones"},
    {"id": "h2", "text": "phone case with card holder"},
    {"id": "h3", "text": "espresso machine"},
]
CANDIDATES = [
    {"id": "c1", "text": "wireless earbuds with charging case"},
    {"id": "c2", "text": "stainless steel chef knife"},
    {"id": "c3", "text": "milk frother for coffee"},
    {"id": "c4", "text": "usb-c charging cable"},
]


@pytest.fixture(scope="module")
def client(tiny_store: Any) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_store=tiny_store, sessions_per_model=1))) as c:
        yield c


def recommend(client: TestClient, **body: Any) -> Any:
    response = client.post("/v1/recommend", json={"candidates": CANDIDATES, **body})
    assert response.status_code == 200, response.text
    return response.json()


def scores(answer: Any) -> dict[str, float]:
    return {r["id"]: r["score"] for r in answer["results"]}


def embeddings(client: TestClient, texts: list[str]) -> np.ndarray:
    body = {"model": "product-recommender", "input": texts, "encoding_format": "float"}
    data = client.post("/v1/embeddings", json=body).json()["data"]
    return np.array([d["embedding"] for d in data], dtype=np.float64)


def test_the_recommender_scores_with_its_recency_weighted_user_tower(client: TestClient) -> None:
    answer = recommend(client, history=HISTORY)
    assert (answer["model"], answer["version"]) == ("product-recommender", "1")
    items = embeddings(client, [h["text"] for h in HISTORY])
    user = recency_weights(3, 2.0) @ items  # the tiny store's product-recommender: half-life 2 items
    user /= np.linalg.norm(user)
    expected = embeddings(client, [c["text"] for c in CANDIDATES]) @ user
    got = scores(answer)
    np.testing.assert_allclose([got[c["id"]] for c in CANDIDATES], expected, atol=1e-5)
    plain = embeddings(client, [h["text"] for h in HISTORY]).mean(axis=0)
    plain_scores = embeddings(client, [c["text"] for c in CANDIDATES]) @ (plain / np.linalg.norm(plain))
    assert not np.allclose(expected, plain_scores, atol=1e-4)  # recency changed the answer


def test_models_show_each_bi_encoder_s_user_tower(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["product-recommender"]["user_tower"] == {"recency_half_life": 2.0}
    assert models["product-embedder"]["user_tower"] == {"recency_half_life": None}
    assert models["review-sentiment"]["user_tower"] is None


def test_a_model_without_a_user_tower_takes_the_plain_mean(client: TestClient) -> None:
    answer = recommend(client, history=HISTORY, model="product-embedder")
    assert answer["model"] == "product-embedder"
    items = embeddings(client, [h["text"] for h in HISTORY])  # the same tiny checkpoint as the embedder
    user = items.mean(axis=0)
    expected = embeddings(client, [c["text"] for c in CANDIDATES]) @ (user / np.linalg.norm(user))
    got = scores(answer)
    np.testing.assert_allclose([got[c["id"]] for c in CANDIDATES], expected, atol=1e-5)


def test_timestamps_put_the_history_in_time_order(client: TestClient) -> None:
    ordered = recommend(client, history=HISTORY)
    times = ["2026-01-01T00:00:00Z", 1767312000, "2026-01-03T09:00:00+09:00"]  # Jan 1, Jan 2, Jan 3 00:00Z
    timed = [{**h, "timestamp": t} for h, t in zip(HISTORY, times, strict=True)]
    shuffled = recommend(client, history=[timed[2], timed[0], timed[1]])
    assert scores(shuffled) == pytest.approx(scores(ordered), abs=1e-6)
    reversed_order = recommend(client, history=HISTORY[::-1])
    assert scores(reversed_order) != pytest.approx(scores(ordered), abs=1e-6)


def test_an_event_weighs_like_the_configured_weight(client: TestClient) -> None:
    purchase = recommend(client, history=[{**HISTORY[0], "event": "purchase"}, *HISTORY[1:]])
    weighted = recommend(client, history=[{**HISTORY[0], "weight": 3.0}, *HISTORY[1:]])  # default purchase: 3
    assert scores(purchase) == pytest.approx(scores(weighted), abs=1e-6)
    view = recommend(client, history=[{**HISTORY[0], "event": "view"}, *HISTORY[1:]])
    assert scores(view) == pytest.approx(scores(recommend(client, history=HISTORY)), abs=1e-6)


def test_owned_items_are_left_out_unless_the_request_keeps_them(client: TestClient) -> None:
    owned = [*HISTORY, {"id": "c3", "text": "milk frother for coffee"}]
    answer = recommend(client, history=owned)
    assert answer["excluded"] == ["c3"]
    assert {r["id"] for r in answer["results"]} == {"c1", "c2", "c4"}
    kept = recommend(client, history=owned, exclude_history=False)
    assert kept["excluded"] == []
    assert {r["id"] for r in kept["results"]} == {"c1", "c2", "c3", "c4"}
    assert scores(kept)["c1"] == pytest.approx(scores(answer)["c1"], abs=1e-6)
    everything = recommend(client, history=[*HISTORY, *CANDIDATES])
    assert everything["results"] == []
    assert len(everything["excluded"]) == 4


@pytest.mark.parametrize(
    ("history", "problem"),
    [
        ([{**HISTORY[0], "timestamp": 1.0}, HISTORY[1]], "give one for every item or none"),
        ([{**HISTORY[0], "event": "wishlist"}], "event"),
        ([{**HISTORY[0], "timestamp": "2026-01-01T00:00:00"}], "timestamp"),  # no offset: ambiguous
    ],
)
def test_bad_history_entries_get_422(client: TestClient, history: list[Any], problem: str) -> None:
    response = client.post("/v1/recommend", json={"history": history, "candidates": CANDIDATES})
    assert response.status_code == 422, response.text
    assert problem in response.text


def test_old_requests_keep_working(client: TestClient) -> None:
    body = {
        "history": [{"id": "h1", "text": "bluetooth headphones", "weight": 2.0}],
        "candidates": CANDIDATES,
    }
    response = client.post("/v1/recommend", json=body)
    assert response.status_code == 200
    assert len(response.json()["results"]) == len(CANDIDATES)
    assert response.json()["excluded"] == []
