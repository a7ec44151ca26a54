"""POST /v1/embeddings in OpenAI's shape: the encoding helpers, then the `openai` SDK against a server."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

from app.api.openai import texts_of, to_base64
from app.errors import InvalidRequest
from app.service import shorten
from tests.app.server import Server, run_server

TOKEN = "openai-dialect-token-0123456789"
TEXTS = ["wireless earbuds", "Bluetooth in-ear earbuds with charging case", "stainless steel chef knife"]


# --- without a server --------------------------------------------------------------------------------
def test_base64_is_the_little_endian_float32_bytes() -> None:
    vector = np.array([1.0, -0.5, 3.25e-8, 0.1], dtype=np.float32)
    raw = base64.b64decode(to_base64(vector))
    assert raw == vector.astype("<f4").tobytes()
    np.testing.assert_array_equal(np.frombuffer(raw, dtype="<f4"), vector)


def test_base64_of_a_big_endian_or_float64_vector_is_still_little_endian_float32() -> None:
    vector = np.array([0.25, -2.0], dtype=">f8")
    assert base64.b64decode(to_base64(vector)) == np.array([0.25, -2.0], dtype="<f4").tobytes()


def test_shorten_keeps_the_first_dimensions_at_unit_length() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    short = shorten(vectors, 8)
    assert short.shape == (5, 8)
    assert short.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, rtol=1e-6)
    # Same direction as the first 8 components.
    cosines = np.sum(short * vectors[:, :8], axis=1) / np.linalg.norm(vectors[:, :8], axis=1)
    np.testing.assert_allclose(cosines, 1.0, rtol=1e-6)
    np.testing.assert_allclose(shorten(vectors, 32), vectors, rtol=1e-6)


def test_shorten_leaves_a_row_with_zero_head_at_zero() -> None:
    vectors = np.array([[0.0, 0.0, 1.0], [0.6, 0.8, 0.0]], dtype=np.float32)
    short = shorten(vectors, 2)
    np.testing.assert_array_equal(short[0], [0.0, 0.0])
    np.testing.assert_allclose(short[1], [0.6, 0.8], rtol=1e-6)


def test_texts_of_takes_a_text_or_texts_and_refuses_token_ids_and_nothing() -> None:
    assert texts_of("a") == ["a"]
    assert texts_of(["a", "b"]) == ["a", "b"]
    for value in ([], [1, 2], [[1, 2]]):
        with pytest.raises(InvalidRequest) as info:
            texts_of(value)
        assert info.value.field == "input"


# --- the openai SDK against a real server ------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tiny_store, tmp_path_factory.mktemp("logs"), api_token=TOKEN, sessions_per_model=1) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=TOKEN, max_retries=0)


def _vectors(response: openai.types.CreateEmbeddingResponse) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


@pytest.mark.integration
def test_sdk_default_base64_and_float_give_the_same_unit_vectors(client: openai.OpenAI) -> None:
    default = client.embeddings.create(model="product-embedder", input=TEXTS)  # the SDK asks for base64
    floats = client.embeddings.create(model="product-embedder", input=TEXTS, encoding_format="float")
    assert default.model == floats.model == "product-embedder"
    assert default.object == "list"
    assert default.usage.prompt_tokens == default.usage.total_tokens > 0
    a, b = _vectors(default), _vectors(floats)
    assert a.shape == (3, 32)
    np.testing.assert_array_equal(a, b)  # float32 survives JSON exactly
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)


@pytest.mark.integration
def test_explicit_base64_is_returned_as_the_string(client: openai.OpenAI) -> None:
    encoded = client.embeddings.create(model="product-embedder", input=TEXTS[0], encoding_format="base64")
    floats = client.embeddings.create(model="product-embedder", input=TEXTS[0], encoding_format="float")
    text = encoded.data[0].embedding
    assert isinstance(text, str)
    decoded = np.frombuffer(base64.b64decode(text), dtype="<f4")
    np.testing.assert_array_equal(decoded, np.array(floats.data[0].embedding, dtype=np.float32))


@pytest.mark.integration
def test_dimensions_shorten_and_renormalise(client: openai.OpenAI) -> None:
    full = _vectors(client.embeddings.create(model="product-embedder", input=TEXTS, encoding_format="float"))
    short = _vectors(client.embeddings.create(model="product-embedder", input=TEXTS, dimensions=8))
    assert short.shape == (3, 8)
    np.testing.assert_allclose(short, shorten(full, 8), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, rtol=1e-5)


@pytest.mark.integration
def test_embeddings_agree_with_rank_scores(client: openai.OpenAI, server: Server) -> None:
    vectors = _vectors(client.embeddings.create(model="product-embedder", input=TEXTS))
    candidates = [{"id": str(i), "text": t} for i, t in enumerate(TEXTS[1:])]
    with server.client(headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        body = {"query": TEXTS[0], "candidates": candidates, "rerank_top_n": 0}  # the bi-encoder alone
        rank = c.post("/v1/rank", json=body).json()
    scores = {int(r["id"]): r["score"] for r in rank["results"]}
    for i in range(2):
        assert float(vectors[i + 1] @ vectors[0]) == pytest.approx(scores[i], abs=1e-5)


@pytest.mark.integration
def test_sdk_errors_carry_the_status_and_the_service_message(client: openai.OpenAI, server: Server) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as cross:
        client.embeddings.create(model="product-reranker", input=TEXTS)
    assert cross.value.status_code == 422
    assert isinstance(cross.value.body, dict)
    assert cross.value.body["type"] == "invalid_request"
    assert cross.value.body["message"].startswith("model:")
    with pytest.raises(openai.UnprocessableEntityError) as too_wide:
        client.embeddings.create(model="product-embedder", input=TEXTS, dimensions=33)
    assert "dimensions" in str(too_wide.value)
    with pytest.raises(openai.UnprocessableEntityError) as blank:
        client.embeddings.create(model="product-embedder", input=["fine", "  "])
    assert "input.1" in str(blank.value)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.embeddings.create(model="text-embedding-3-small", input=TEXTS)
    assert unknown.value.status_code == 404
    wrong = openai.OpenAI(base_url=server.base_url + "/v1", api_key="wrong-token-0123456789", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.embeddings.create(model="product-embedder", input=TEXTS)


@pytest.mark.integration
def test_raw_requests_default_model_token_ids_and_openapi(server: Server) -> None:
    with server.client(headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        default = c.post("/v1/embeddings", json={"input": "earbuds"})
        tokens = c.post("/v1/embeddings", json={"input": [101, 2023, 102], "model": "product-embedder"})
        spec = c.get("/openapi.json").json()
    assert default.status_code == 200, default.text
    body = default.json()
    assert (body["model"], body["version"]) == ("product-embedder", "1")
    assert isinstance(body["data"][0]["embedding"], list)  # the API's default is float
    assert default.headers["x-model"] == "product-embedder"
    assert tokens.status_code == 422
    assert tokens.json()["error"]["message"].startswith("input: token-id arrays")
    operation = spec["paths"]["/v1/embeddings"]["post"]
    assert {"200", "401", "404", "422", "429", "503"} <= set(operation["responses"])
    assert spec["components"]["schemas"]["EmbeddingsRequest"]["examples"]
