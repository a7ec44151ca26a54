"""The fast handlers of the hot endpoints: what they answer, what they leave to FastAPI, and that both
paths give the same answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from app.api.hotpath import fast_routes
from app.main import create_app
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
) -> tuple[list[Reply | None], Metrics]:
    metrics = Metrics()

    async def scenario() -> list[Reply | None]:
        service = Service(settings, metrics)
        await service.start()
        if drain:
            service.begin_drain()
        routes = fast_routes(service, metrics)
        try:
            return [await routes[path](ex) for path, ex in calls]
        finally:
            await service.registry.close(10)

    return asyncio.run(scenario()), metrics


def test_fast_handlers_answer_valid_requests_and_service_errors(
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
    embedder = ("product-embedder", "1")
    assert [(r.model, r.version) for r in ok] == [("review-sentiment", "1"), embedder, embedder]
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
    ("body", "headers"),
    [
        ({"texts": ["a"]}, [AUTH]),  # no content type
        ({"texts": ["a"]}, [(b"content-type", b"text/plain"), AUTH]),
        (b'{"texts": ["a"', [JSON, AUTH]),  # malformed JSON
        (b"", [JSON, AUTH]),  # no body
        (["a"], [JSON, AUTH]),  # not an object
        ({"texts": "a"}, [JSON, AUTH]),  # fails validation
        ({"texts": ["a"], "extra": 1}, [JSON, AUTH]),
    ],
)
def test_fast_handler_leaves_to_fastapi_what_it_would_not_answer_the_same_way(
    make_settings: Callable[..., Settings], body: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    replies, _ = run_handlers(make_settings(api_token=TOKEN), [("/v1/sentiment", exchange(body, *headers))])
    assert replies == [None]


def test_fast_handler_leaves_draining_to_fastapi(make_settings: Callable[..., Settings]) -> None:
    replies, _ = run_handlers(
        make_settings(), [("/v1/sentiment", exchange({"texts": ["a"]}, JSON))], drain=True
    )
    assert replies == [None]


@pytest.fixture(scope="module")
def client(tiny_store: Any) -> Iterator[TestClient]:
    settings = Settings(model_store=tiny_store, sessions_per_model=1, api_token=TOKEN)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/sentiment", {"texts": ["great sound", "broke after a week"]}),
        ("/v1/rank", {"query": "earbuds", "candidates": CANDIDATES, "top_k": 1}),
        ("/v1/recommend", {"history": CANDIDATES[:1], "candidates": CANDIDATES}),
        ("/v1/sentiment", {"texts": ["a"], "version": "9"}),
        ("/v1/rank", {"query": "q", "candidates": CANDIDATES * 2}),
    ],
)
def test_fast_path_and_the_fastapi_route_answer_alike(client: TestClient, path: str, body: Any) -> None:
    # `application/json` is answered by the fast handler; a `+json` type only by the FastAPI route.
    answers = [
        client.post(
            path,
            content=orjson.dumps(body),
            headers={"content-type": content_type, "authorization": f"Bearer {TOKEN}"},
        )
        for content_type in ("application/json", "application/vnd.storefront+json")
    ]
    fast, routed = answers
    assert fast.status_code == routed.status_code
    assert fast.json() == routed.json()
    timing = {"x-request-id", "x-total-ms", "x-queue-ms", "x-tokenize-ms", "x-inference-ms"}
    for r in answers:
        assert r.headers["content-type"] == "application/json"
        assert fast.status_code != 200 or timing | {"x-model", "x-model-version"} <= set(r.headers)
