"""The JSON endpoints (app.api.endpoints): one path answers every request to them, valid or not, and the
OpenAPI document describes them from the same declarations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from app.api.endpoints import json_handlers
from app.main import JSON_ENDPOINTS, create_app
from app.metrics import Metrics
from app.middleware import Exchange, Reply
from app.service import Service
from app.settings import Settings

TOKEN = "hot-path-token-0123456789"
JSON = (b"content-type", b"application/json")
AUTH = (b"authorization", f"Bearer {TOKEN}".encode())
CANDIDATES = [{"id": "a", "text": "wireless earbuds"}, {"id": "b", "text": "chef knife"}]


async def _never() -> Message:
    await asyncio.sleep(3600)
    return {"type": "http.disconnect"}


def exchange(body: Any, *headers: tuple[bytes, bytes]) -> Exchange:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    scope = {"type": "http", "method": "POST", "headers": list(headers), "state": {}}
    return Exchange(scope, raw, _never, time.monotonic())


def run_handlers(
    settings: Settings, calls: list[tuple[str, Exchange]], drain: bool = False
) -> tuple[list[Reply], Metrics]:
    metrics = Metrics()

    async def scenario() -> list[Reply]:
        service = Service(settings, metrics)
        await service.start()
        if drain:
            service.begin_drain()
        routes = json_handlers(JSON_ENDPOINTS, service, metrics)
        try:
            return [await routes[path](ex) for path, ex in calls]
        finally:
            await service.registry.close(10)

    return asyncio.run(scenario()), metrics


def test_valid_requests_and_service_errors(
    make_settings: Callable[..., Settings],
) -> None:
    replies, metrics = run_handlers(
        make_settings(api_token=TOKEN, max_texts_per_request=4),
        [
            ("/v1/sentiment", exchange({"texts": ["great", "bad"]}, JSON, AUTH)),
            ("/v1/rank", exchange({"query": "earbuds", "candidates": CANDIDATES}, JSON, AUTH)),
            ("/v1/recommend", exchange({"history": CANDIDATES[:1], "candidates": CANDIDATES}, JSON, AUTH)),
            ("/v1/sentiment", exchange({"texts": ["a"], "model": "nope"}, JSON, AUTH)),
            ("/v1/sentiment", exchange({"texts": ["a"] * 5}, JSON, AUTH)),
            ("/v1/rank", exchange({"query": "q", "candidates": CANDIDATES * 2}, JSON, AUTH)),
        ],
    )
    assert all(r is not None for r in replies)
    ok = [r for r in replies[:3] if r is not None]
    assert [r.status for r in ok] == [200, 200, 200]
    assert [(r.model, r.version) for r in ok] == [
        ("review-sentiment", "1"),
        ("product-embedder", "1"),
        ("product-recommender", "1"),
    ]
    sentiment = orjson.loads(ok[0].body)
    assert [set(x["probabilities"]) for x in sentiment["results"]] == [{"negative", "positive"}] * 2
    assert {b"x-model", b"x-model-version", b"x-queue-ms", b"x-inference-ms"} <= {k for k, _ in ok[0].headers}
    errors = [(r.status, orjson.loads(r.body)["error"]) for r in replies[3:] if r is not None]
    assert [status for status, _ in errors] == [404, 422, 422]
    assert errors[0][1]["type"] == "model_not_found"
    assert errors[1][1]["message"].startswith("texts: 5 items")
    assert errors[2][1]["message"].startswith("candidates.2.id")
    rejected = sorted(
        (s.labels["endpoint"], s.labels["reason"], s.value)
        for m in metrics.registry.collect()
        for s in m.samples
        if s.name == "inference_rejected_requests_total"
    )
    # counted like the FastAPI route counts them; a 404 is not a rejection reason
    assert rejected == [("/v1/rank", "invalid_request", 1.0), ("/v1/sentiment", "invalid_request", 1.0)]


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        ({"texts": ["a"]}, [], 200, None),  # no content type: JSON, as FastAPI reads it
        ({"texts": ["a"]}, [(b"content-type", b"application/vnd.storefront+json")], 200, None),
        ({"texts": ["a"]}, [(b"content-type", b"text/plain")], 415, "the body must be JSON"),
        (b'{"texts": ["a"', [JSON], 422, "body: invalid JSON"),
        (b"", [JSON], 422, "body: invalid JSON"),
        (b"\xff\xfe", [JSON], 422, "body: invalid JSON"),
        (["a"], [JSON], 422, "body: Input should be a valid dictionary"),
        ({"texts": "a"}, [JSON], 422, "texts: Input should be a valid list"),
        ({"texts": ["a"], "extra": 1}, [JSON], 422, "extra: Extra inputs are not permitted"),
        ({"texts": [1, "a", None]}, [JSON], 422, "texts.0: Input should be a valid string; texts.2:"),
        (b'{"texts": ["half \\ud83d"]}', [JSON], 422, "texts.0: text is not valid Unicode"),
        ({"texts": ["a"], "version": "01"}, [JSON], 422, "version: String should match pattern"),
    ],
)
def test_the_one_path_answers_every_body_itself(
    make_settings: Callable[..., Settings],
    body: Any,
    headers: list[tuple[bytes, bytes]],
    status: int,
    message: str | None,
) -> None:
    replies, metrics = run_handlers(make_settings(), [("/v1/sentiment", exchange(body, *headers))])
    reply = replies[0]
    assert reply.status == status, reply.body
    if message is not None:
        error = orjson.loads(reply.body)["error"]
        assert error["type"] == ("unsupported_media_type" if status == 415 else "invalid_request")
        assert error["message"].startswith(message), error["message"]
        reason = "unsupported_media_type" if status == 415 else "invalid_request"
        value = metrics.registry.get_sample_value(
            "inference_rejected_requests_total", {"endpoint": "/v1/sentiment", "reason": reason}
        )
        assert value == 1


def test_draining_and_other_methods_are_answered_by_the_one_path(
    make_settings: Callable[..., Settings],
) -> None:
    replies, _ = run_handlers(
        make_settings(), [("/v1/sentiment", exchange({"texts": ["a"]}, JSON))], drain=True
    )
    assert replies[0].status == 503
    assert orjson.loads(replies[0].body)["error"]["type"] == "draining"
    get = exchange(b"", JSON)
    get.scope["method"] = "GET"
    replies, _ = run_handlers(make_settings(), [("/v1/rank", get)])
    assert replies[0].status == 405
    assert (b"allow", b"POST") in replies[0].headers


@pytest.fixture(scope="module")
def client(tiny_store: Any) -> Iterator[TestClient]:
    settings = Settings(model_store=tiny_store, sessions_per_model=1, api_token=TOKEN)  # type: ignore[arg-type]
    with TestClient(create_app(settings), headers={"authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def test_the_openapi_document_describes_the_json_endpoints(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    for path, request, response in [
        ("/v1/sentiment", "SentimentRequest", "SentimentResponse"),
        ("/v1/rank", "RankRequest", "RankResponse"),
        ("/v1/recommend", "RecommendRequest", "RecommendResponse"),
    ]:
        post = document["paths"][path]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{request}"
        }
        assert post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(response)
        assert {"400", "401", "404", "408", "413", "415", "422", "429", "503", "504"} <= set(
            post["responses"]
        )
        assert post["security"] == [{"HTTPBearer": []}]
        assert schemas[request]["examples"]
    assert "Candidate" in schemas  # nested models are components too
    # the examples answer as documented
    example = schemas["RankRequest"]["examples"][0]
    assert client.post("/v1/rank", json=example).status_code == 200
