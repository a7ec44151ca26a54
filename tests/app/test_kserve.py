"""The Open Inference Protocol (KServe v2) endpoints: the tensor codec, then `tritonclient` against a real
server (started without INFERENCE_API_TOKEN: /v2 paths are not behind the bearer check yet)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from app.api.kserve_tensors import decode_bytes_tensor, flat_texts, inline_binary_inputs
from app.errors import InvalidRequest
from tests.app.server import Server, run_server

REVIEWS = ["great sound", "the battery died after two days", "ok", "émoji 🎧 fine"]
DOCUMENTS = ["stainless steel chef knife", "Bluetooth in-ear earbuds", "over ear headphones"]


def binary(texts: list[str]) -> bytes:
    return bytes(serialize_byte_tensor(np.array(texts, dtype=object)).item())


# --- without a server --------------------------------------------------------------------------------
def test_bytes_tensor_round_trips_tritonclients_serialisation() -> None:
    assert decode_bytes_tensor(binary(REVIEWS), "x") == REVIEWS
    assert decode_bytes_tensor(b"", "x") == []


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"\x05\x00", "inside an element's length"),
        (b"\x05\x00\x00\x00abc", "inside an element"),
        (b"\x02\x00\x00\x00\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_bytes_tensors_are_refused(raw: bytes, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        decode_bytes_tensor(raw, "inputs.0")


def test_binary_inputs_are_inlined_as_json_data() -> None:
    header = {
        "id": "r1",
        "inputs": [
            {"name": "query", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 0}},
            {"name": "document", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
        ],
    }
    header["inputs"][0]["parameters"]["binary_data_size"] = len(binary(["q"]))
    head = json.dumps(header).encode()
    body = inline_binary_inputs(head + binary(["q"]), str(len(head)))
    request = orjson.loads(body)
    assert request["inputs"][0]["data"] == ["q"]
    assert request["inputs"][0]["parameters"] == {}
    assert request["inputs"][1]["data"] == ["a", "b"]
    assert inline_binary_inputs(head, None) == head  # no header: the body is JSON already


HELLO = {
    "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]
}


@pytest.mark.parametrize(
    ("header_length", "after_header", "field"),
    [
        ("x", b"", "Inference-Header-Content-Length"),
        ("100000", b"", "Inference-Header-Content-Length"),
        (None, b"\x05\x00\x00", "inputs.0.parameters.binary_data_size"),  # 9 bytes announced, 3 sent
        (None, binary(["hello"]) + b"\x00", "body"),  # a byte left over
    ],
)
def test_inconsistent_binary_requests_are_refused(
    header_length: str | None, after_header: bytes, field: str
) -> None:
    head = json.dumps(HELLO).encode()
    assert len(binary(["hello"])) == 9
    with pytest.raises(InvalidRequest) as info:
        inline_binary_inputs(head + after_header, header_length or str(len(head)))
    assert info.value.field == field


def test_flat_texts_reads_nested_row_major_data_and_checks_the_shape() -> None:
    assert flat_texts([["a", "b"], ["c", "d"]], [2, 2], "inputs.0") == ["a", "b", "c", "d"]
    assert flat_texts(["a", "b"], [2, 1], "inputs.0") == ["a", "b"]
    with pytest.raises(InvalidRequest, match="does not hold") as shape:
        flat_texts(["a", "b"], [3], "inputs.0")
    assert shape.value.field == "inputs.0.shape"
    with pytest.raises(InvalidRequest, match="not a string") as element:
        flat_texts(["a", 1], [2], "inputs.0")
    assert element.value.field == "inputs.0.data"


# --- tritonclient against a real server ---------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tiny_store, tmp_path_factory.mktemp("logs"), sessions_per_model=1) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.base_url.removeprefix("http://"))
    yield c
    c.close()


def text_input(name: str, texts: list[str], binary_data: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary_data)
    return tensor


def native(server: Server, path: str, body: dict[str, Any]) -> Any:
    with server.client() as c:
        r = c.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.integration
def test_health_and_model_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("review-sentiment")
    assert client.is_model_ready("product-reranker", "1")
    assert not client.is_model_ready("review-sentiment", "2")
    assert not client.is_model_ready("no-such-model")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


@pytest.mark.integration
def test_model_metadata_by_kind(client: triton.InferenceServerClient) -> None:
    sentiment = client.get_model_metadata("review-sentiment")
    assert sentiment["versions"] == ["1"]
    assert sentiment["platform"] == "onnxruntime"
    assert sentiment["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert sentiment["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
    assert sentiment["parameters"]["labels"] == ["negative", "positive"]
    embedder = client.get_model_metadata("product-embedder", "1")
    assert embedder["outputs"] == [{"name": "embeddings", "datatype": "FP32", "shape": [-1, -1]}]
    reranker = client.get_model_metadata("product-reranker")
    assert [t["name"] for t in reranker["inputs"]] == ["query", "document"]
    assert reranker["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 1]}]
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("no-such-model")
    assert unknown.value.status() == "404"
    assert "no-such-model" in unknown.value.message()


@pytest.mark.integration
@pytest.mark.parametrize("binary_data", [True, False])
def test_classifier_matches_v1_sentiment(
    client: triton.InferenceServerClient, server: Server, binary_data: bool
) -> None:
    result = client.infer("review-sentiment", [text_input("text", REVIEWS, binary_data)], request_id="abc")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (4, 2)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    expected = native(server, "/v1/sentiment", {"texts": REVIEWS})["results"]
    for row, item in zip(probabilities, expected, strict=True):
        np.testing.assert_allclose(
            row, [item["probabilities"]["negative"], item["probabilities"]["positive"]]
        )
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "review-sentiment",
        "1",
        "abc",
    )


@pytest.mark.integration
def test_bi_encoder_matches_v1_embeddings(client: triton.InferenceServerClient, server: Server) -> None:
    result = client.infer("product-embedder", [text_input("text", DOCUMENTS)], model_version="1")
    vectors = result.as_numpy("embeddings")
    assert vectors.shape == (3, 32)
    expected = native(server, "/v1/embeddings", {"input": DOCUMENTS, "model": "product-embedder"})["data"]
    np.testing.assert_array_equal(vectors, np.array([d["embedding"] for d in expected], dtype=np.float32))


@pytest.mark.integration
def test_cross_encoder_pairs_and_a_broadcast_query_match_v1_rank(
    client: triton.InferenceServerClient, server: Server
) -> None:
    candidates = [{"id": str(i), "text": d} for i, d in enumerate(DOCUMENTS)]
    rank = native(
        server, "/v1/rank", {"query": "earbuds", "candidates": candidates, "model": "product-reranker"}
    )
    expected = {int(r["id"]): r["score"] for r in rank["results"]}
    one = [text_input("query", ["earbuds"]), text_input("document", DOCUMENTS)]
    scores = client.infer("product-reranker", one).as_numpy("scores")
    assert scores.shape == (3, 1)
    np.testing.assert_allclose(scores[:, 0], [expected[i] for i in range(3)], rtol=1e-6)
    pairs = [text_input("query", ["earbuds"] * 3, binary_data=False), text_input("document", DOCUMENTS)]
    np.testing.assert_allclose(client.infer("product-reranker", pairs).as_numpy("scores"), scores, rtol=1e-6)


@pytest.mark.integration
def test_errors_are_inference_server_exceptions_with_status_and_message(
    client: triton.InferenceServerClient,
) -> None:
    def failure(model: str, inputs: list[triton.InferInput], **kwargs: Any) -> InferenceServerException:
        with pytest.raises(InferenceServerException) as info:
            client.infer(model, inputs, **kwargs)
        assert isinstance(info.value.message(), str)
        str(info.value)  # renders: the message is a string, not the service's error object
        return info.value

    wrong_name = failure("review-sentiment", [text_input("texts", REVIEWS)])
    assert wrong_name.status() == "422"
    assert wrong_name.message().startswith("inputs: review-sentiment takes inputs ['text']")
    blank = failure("review-sentiment", [text_input("text", ["fine", " "])])
    assert (blank.status(), blank.message()) == ("422", "inputs.0.data.1: text is empty or only whitespace")
    wrong_type = triton.InferInput("text", [1], "FP32")
    wrong_type.set_data_from_numpy(np.array([1.0], dtype=np.float32), binary_data=False)
    assert failure("review-sentiment", [wrong_type]).message().startswith("inputs.0.datatype:")
    wrong_output = failure(
        "review-sentiment", [text_input("text", REVIEWS)], outputs=[triton.InferRequestedOutput("x")]
    )
    assert wrong_output.message().startswith("outputs.0.name:")
    assert failure("no-such-model", [text_input("text", REVIEWS)]).status() == "404"
    assert failure("review-sentiment", [text_input("text", REVIEWS)], model_version="9").status() == "404"


@pytest.mark.integration
def test_malformed_json_and_the_openapi_document(server: Server) -> None:
    with server.client() as c:
        bad = c.post(
            "/v2/models/review-sentiment/infer",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        missing = c.post("/v2/models/review-sentiment/infer", json={"inputs": []})
        spec = c.get("/openapi.json").json()
    assert bad.status_code == 422
    assert isinstance(bad.json()["error"], str)
    assert missing.status_code == 422
    assert missing.json()["error"].startswith("inputs:")
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/KServeError")
    assert spec["components"]["schemas"]["InferRequest"]["examples"]


def test_v2_paths_need_the_api_token_but_health_stays_open(tiny_store: Path, tmp_path: Path) -> None:
    token = "kserve-token-0123456789"
    with run_server(tiny_store, tmp_path, api_token=token) as s:
        refused = httpx.get(s.base_url + "/v2/models/review-sentiment")
        assert refused.status_code == 401
        assert isinstance(refused.json()["error"], str)  # the protocol's shape, which tritonclient reads
        auth = {"authorization": f"Bearer {token}"}
        assert httpx.get(s.base_url + "/v2/models/review-sentiment", headers=auth).status_code == 200
        assert httpx.get(s.base_url + "/v2/health/live").status_code == 200
        assert httpx.get(s.base_url + "/v2/health/ready").status_code == 200
        rerank = httpx.post(s.base_url + "/v2/rerank", json={"query": "q", "documents": ["a"]})
        assert rerank.status_code == 401
        assert rerank.json()["error"]["type"] == "unauthorized"  # Cohere's path keeps the service's shape
        client = triton.InferenceServerClient(url=s.base_url.removeprefix("http://"))
        with pytest.raises(InferenceServerException, match="missing or wrong bearer token"):
            client.get_model_metadata("review-sentiment")
        assert client.get_model_metadata("review-sentiment", headers=auth)["name"] == "review-sentiment"
