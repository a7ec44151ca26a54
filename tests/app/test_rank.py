"""POST /v1/rank: the bi-encoder alone, two-stage (its best N re-scored by the cross-encoder), the reranker
alone, and what each answer says about the stages that ran."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

QUERY = "wireless earbuds"
CANDIDATES = [
    {"id": "c1", "text": "wireless earbuds with charging case"},
    {"id": "c2", "text": "stainless steel chef knife"},
    {"id": "c3", "text": "noise cancelling over ear headphones"},
    {"id": "c4", "text": "usb-c charging cable"},
    {"id": "c5", "text": "espresso machine with milk frother"},
    {"id": "c6", "text": "bluetooth speaker for the shower"},
]


@pytest.fixture(scope="module")
def client(tiny_store: Path) -> Iterator[TestClient]:
    settings = Settings(
        model_store=tiny_store, sessions_per_model=1, rank_rerank_top_n=3, rank_rerank_max_top_n=4
    )
    with TestClient(create_app(settings)) as c:
        yield c


def rank(client: TestClient, **body: Any) -> Any:
    response = client.post("/v1/rank", json={"query": QUERY, "candidates": CANDIDATES, **body})
    assert response.status_code == 200, response.text
    return response.json()


def cosines(client: TestClient) -> dict[str, float]:
    texts = [QUERY] + [c["text"] for c in CANDIDATES]
    body = {"model": "product-embedder", "input": texts, "encoding_format": "float"}
    vectors = np.array([d["embedding"] for d in client.post("/v1/embeddings", json=body).json()["data"]])
    return {c["id"]: float(s) for c, s in zip(CANDIDATES, vectors[1:] @ vectors[0], strict=True)}


def cross_scores(client: TestClient) -> dict[str, float]:
    """The reranker's score of every candidate, from /v1/rank with the cross-encoder alone."""
    return {r["id"]: r["score"] for r in rank(client, model="product-reranker")["results"]}


def test_by_default_the_cross_encoder_rescores_the_bi_encoder_s_best_n(client: TestClient) -> None:
    answer = rank(client)
    assert (answer["model"], answer["version"]) == ("product-embedder", "1")
    assert answer["stages"] == [
        {"model": "product-embedder", "version": "1", "kind": "bi-encoder", "candidates": 6},
        {"model": "product-reranker", "version": "1", "kind": "cross-encoder", "candidates": 3},
    ]
    cos, cross = cosines(client), cross_scores(client)
    shortlist = sorted(cos, key=lambda i: -cos[i])[:3]
    ids = [r["id"] for r in answer["results"]]
    assert ids[:3] == sorted(shortlist, key=lambda i: -cross[i])  # the best N, in the reranker's order
    assert ids[3:] == sorted(set(cos) - set(shortlist), key=lambda i: -cos[i])  # the rest, first stage
    got = {r["id"]: r["score"] for r in answer["results"]}
    np.testing.assert_allclose([got[i] for i in ids[:3]], [cross[i] for i in ids[:3]], atol=1e-5)
    np.testing.assert_allclose([got[i] for i in ids[3:]], [cos[i] for i in ids[3:]], atol=1e-5)


def test_rerank_top_n_zero_ranks_with_the_bi_encoder_alone(client: TestClient) -> None:
    answer = rank(client, rerank_top_n=0)
    assert [s["model"] for s in answer["stages"]] == ["product-embedder"]
    cos = cosines(client)
    assert [r["id"] for r in answer["results"]] == sorted(cos, key=lambda i: -cos[i])
    np.testing.assert_allclose(
        [r["score"] for r in answer["results"]], sorted(cos.values(), reverse=True), atol=1e-5
    )


def test_a_request_sets_n_and_top_k_cuts_after_the_rerank(client: TestClient) -> None:
    answer = rank(client, rerank_top_n=4, top_k=2)
    assert answer["stages"][1]["candidates"] == 4
    cos, cross = cosines(client), cross_scores(client)
    shortlist = sorted(cos, key=lambda i: -cos[i])[:4]
    assert [r["id"] for r in answer["results"]] == sorted(shortlist, key=lambda i: -cross[i])[:2]


def test_n_larger_than_the_candidates_reranks_them_all(client: TestClient) -> None:
    few = CANDIDATES[:2]
    response = client.post("/v1/rank", json={"query": QUERY, "candidates": few, "rerank_top_n": 4})
    assert response.json()["stages"][1]["candidates"] == 2


def test_the_reranker_alone_reads_every_pair(client: TestClient) -> None:
    answer = rank(client, model="product-reranker")
    assert answer["stages"] == [
        {"model": "product-reranker", "version": "1", "kind": "cross-encoder", "candidates": 6}
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rerank_top_n": 5}, "rerank_top_n"),  # above INFERENCE_RANK_RERANK_MAX_TOP_N (4 here)
        ({"rerank_top_n": -1}, "rerank_top_n"),
        ({"rerank_top_n": 2, "model": "product-reranker"}, "rerank_top_n"),  # no first stage to shortlist
    ],
)
def test_a_bad_rerank_depth_is_refused_naming_it(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/rank", json={"query": QUERY, "candidates": CANDIDATES, **body})
    assert response.status_code == 422, response.text
    assert field in response.text
    assert rank(client)["stages"][1]["candidates"] == 3  # and the next request is served as before


def test_without_a_reranker_the_default_is_one_stage_and_asking_for_one_is_404(
    tiny_store: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store, ignore=shutil.ignore_patterns("product-reranker"))
    with TestClient(create_app(Settings(model_store=store, sessions_per_model=1))) as c:
        body = {"query": QUERY, "candidates": CANDIDATES}
        answer = c.post("/v1/rank", json=body).json()
        assert [s["model"] for s in answer["stages"]] == ["product-embedder"]
        missing = c.post("/v1/rank", json={**body, "rerank_top_n": 3})
        assert missing.status_code == 404
        assert "product-reranker" in missing.text


def test_the_default_depth_may_not_exceed_the_maximum() -> None:
    with pytest.raises(ValueError, match="rank_rerank_top_n"):
        Settings(rank_rerank_top_n=50, rank_rerank_max_top_n=20)
