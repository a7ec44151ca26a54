"""POST /v1/rerank and /v2/rerank (Cohere / Jina shape) against a real server, with the `cohere` SDK.

The servers run without INFERENCE_API_TOKEN: /v2 paths are not behind the bearer check yet.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cohere
import pytest
from cohere.core.api_error import ApiError

from tests.app.server import Server, run_server

pytestmark = pytest.mark.integration

QUERY = "wireless earbuds"
DOCUMENTS = [
    "stainless steel chef knife",
    "Bluetooth in-ear earbuds with charging case",
    "noise cancelling over ear headphones",
    "espresso machine with milk frother",
]


@pytest.fixture(scope="module")
def server(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tiny_store, tmp_path_factory.mktemp("logs"), sessions_per_model=1) as s:
        yield s


@pytest.fixture(scope="module")
def no_reranker(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose store has no product-reranker: rerank falls back to the bi-encoder."""
    store = tmp_path_factory.mktemp("store") / "store"
    shutil.copytree(tiny_store, store, ignore=shutil.ignore_patterns("product-reranker"))
    with run_server(store, tmp_path_factory.mktemp("logs"), sessions_per_model=1) as s:
        yield s


def rank_scores(server: Server, model: str) -> list[float]:
    """Scores of /v1/rank for DOCUMENTS, in request order."""
    candidates = [{"id": str(i), "text": d} for i, d in enumerate(DOCUMENTS)]
    with server.client() as c:
        r = c.post("/v1/rank", json={"query": QUERY, "candidates": candidates, "model": model})
    assert r.status_code == 200, r.text
    by_id = {int(x["id"]): x["score"] for x in r.json()["results"]}
    return [by_id[i] for i in range(len(DOCUMENTS))]


def post(server: Server, path: str, body: dict[str, Any]) -> Any:
    with server.client() as c:
        return c.post(path, json=body)


def test_cohere_v2_client_reranks_with_the_cross_encoder(server: Server) -> None:
    client = cohere.ClientV2(api_key="any", base_url=server.base_url, max_retries=0)
    response = client.rerank(model="product-reranker", query=QUERY, documents=DOCUMENTS, top_n=3)
    expected = rank_scores(server, "product-reranker")
    assert len(response.results) == 3
    scores = [r.relevance_score for r in response.results]
    assert scores == sorted(scores, reverse=True)
    best = sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])[:3]
    assert [r.index for r in response.results] == best
    for r in response.results:
        assert r.relevance_score == pytest.approx(expected[r.index], abs=1e-6)
        assert 0.0 <= r.relevance_score <= 1.0
    assert response.id


def test_cohere_v1_client_calls_v1_rerank_with_documents_returned(server: Server) -> None:
    client = cohere.Client(api_key="any", base_url=server.base_url, max_retries=0)
    response = client.rerank(
        model="product-reranker", query=QUERY, documents=DOCUMENTS, return_documents=True
    )
    assert sorted(r.index for r in response.results) == list(range(len(DOCUMENTS)))
    for r in response.results:
        assert r.document is not None
        assert r.document.text == DOCUMENTS[r.index]


def test_v1_and_v2_paths_answer_alike_with_the_default_model(server: Server) -> None:
    body = {"query": QUERY, "documents": [{"text": d} for d in DOCUMENTS], "return_documents": True}
    v1, v2 = post(server, "/v1/rerank", body), post(server, "/v2/rerank", body)
    assert v1.status_code == v2.status_code == 200, v1.text + v2.text
    a, b = v1.json(), v2.json()
    assert (a["model"], a["version"]) == ("product-reranker", "1")  # served, so the default
    assert a["results"] == b["results"]
    assert a["results"][0]["document"] == {"text": DOCUMENTS[a["results"][0]["index"]]}
    assert a["id"] == v1.headers["x-request-id"]
    assert a["meta"] == {"warnings": []}


def test_a_long_document_is_reported_as_cut(server: Server) -> None:
    long = " ".join(["earbuds with a long battery life"] * 100)  # 3,300 characters, ~600 tokens
    r = post(server, "/v2/rerank", {"query": QUERY, "documents": ["knife", long]})
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["warnings"] == ["documents [1] were cut to the model's max sequence length"]


def test_bi_encoder_fallback_when_no_cross_encoder_is_served(no_reranker: Server) -> None:
    client = cohere.ClientV2(api_key="any", base_url=no_reranker.base_url, max_retries=0)
    named = client.rerank(model="product-embedder", query=QUERY, documents=DOCUMENTS)
    expected = rank_scores(no_reranker, "product-embedder")
    for r in named.results:
        assert r.relevance_score == pytest.approx(expected[r.index], abs=1e-6)
    default = post(no_reranker, "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS, "top_n": 2}).json()
    assert default["model"] == "product-embedder"
    assert [x["index"] for x in default["results"]] == [r.index for r in named.results][:2]


def test_errors_reach_the_sdk_with_status_and_message(server: Server) -> None:
    client = cohere.ClientV2(api_key="any", base_url=server.base_url, max_retries=0)
    with pytest.raises(ApiError) as blank:
        client.rerank(model="product-reranker", query=QUERY, documents=["fine", "   "])
    assert blank.value.status_code == 422
    assert blank.value.body["error"]["message"].startswith("documents.1:")
    with pytest.raises(ApiError) as unknown:
        client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCUMENTS)
    assert unknown.value.status_code == 404
    assert unknown.value.body["error"]["type"] == "model_not_found"
    with pytest.raises(ApiError) as classifier:
        client.rerank(model="review-sentiment", query=QUERY, documents=DOCUMENTS)
    assert classifier.value.status_code == 422
    assert classifier.value.body["error"]["message"].startswith("model:")


def test_openapi_documents_both_paths(server: Server) -> None:
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    for path in ("/v1/rerank", "/v2/rerank"):
        assert {"200", "404", "422", "429"} <= set(spec["paths"][path]["post"]["responses"])
    assert spec["components"]["schemas"]["RerankRequest"]["examples"]
