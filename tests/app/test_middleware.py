"""The one ASGI middleware: request ids, the checks made on the headers before the body is read (duplicate
headers, bearer tokens), the body's size limit and deadline on every path, the access log by level, and
escaped log lines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from app.main import create_app
from app.metrics import Metrics
from app.middleware import RequestIds, ServiceMiddleware
from app.service import Service
from app.settings import Settings
from tests.app.server import run_server

ADMIN = "admin-token-0123456789"


@pytest.fixture(scope="module")
def client(tiny_store: Any) -> Iterator[TestClient]:
    settings = Settings(model_store=tiny_store, sessions_per_model=1, max_body_bytes=2048, admin_token=ADMIN)
    with TestClient(create_app(settings), headers={"authorization": f"Bearer {ADMIN}"}) as c:
        yield c


def test_request_ids_are_unique_and_share_the_process_prefix() -> None:
    ids = RequestIds()
    made = [ids.next() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert len({m.rsplit("-", 1)[0] for m in made}) == 1
    assert RequestIds().next().rsplit("-", 1)[0] != made[0].rsplit("-", 1)[0]


@pytest.mark.parametrize("path", ["/v1/sentiment", "/v1/models/reload"])
def test_a_sane_request_id_is_kept_on_both_paths_and_an_odd_one_replaced(
    client: TestClient, path: str
) -> None:
    body = {"texts": ["great"]}
    kept = client.post(path, json=body, headers={"x-request-id": "order-42:a.b_c"})
    assert kept.status_code == 200, kept.text
    assert kept.headers["x-request-id"] == "order-42:a.b_c"
    for odd in ("has space", "x" * 129, "a/b", "<script>"):
        r = client.post(path, json=body, headers={"x-request-id": odd})
        assert r.status_code == 200
        assert r.headers["x-request-id"] not in (odd, "")
    first = client.post(path, json=body).headers["x-request-id"]
    assert client.post(path, json=body).headers["x-request-id"] != first


def _chunks() -> Iterator[bytes]:
    yield b'{"texts": ["'
    for _ in range(5):
        yield b"x" * 1000
    yield b'"]}'


@pytest.mark.parametrize("path", ["/v1/sentiment", "/v1/models/reload", "/nowhere"])
def test_a_declared_length_over_the_limit_is_413_on_every_path(client: TestClient, path: str) -> None:
    r = client.post(path, json={"texts": ["x" * 3000]})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["type"] == "body_too_large"
    assert r.headers["x-request-id"]
    label = path if path != "/nowhere" else "other"
    line = f'inference_rejected_requests_total{{endpoint="{label}",reason="body_too_large"}} 1.0'
    assert line in client.get("/metrics").text.splitlines()


def test_a_streamed_body_over_the_limit_is_413_on_the_hot_path(client: TestClient) -> None:
    r = client.post("/v1/sentiment", content=_chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["type"] == "body_too_large"


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI app that reads its whole body (as any future body-reading route would)."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def test_a_streamed_body_over_the_limit_is_413_for_the_apps_behind(tiny_store: Path) -> None:
    settings = Settings(model_store=tiny_store, max_body_bytes=2048)
    metrics = Metrics()
    front = ServiceMiddleware(_echo, Service(settings, metrics), metrics, routes={})
    c = TestClient(front)  # no lifespan: the echo app has none
    small = c.post("/echo", content=iter([b"x" * 1000, b"y" * 1000]))
    assert (small.status_code, small.text) == (200, "2000")
    assert small.headers["x-request-id"]
    r = c.post("/echo", content=_chunks())
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "body_too_large"
    assert r.headers["x-request-id"]


def test_other_methods_on_a_hot_path_are_left_to_fastapi(client: TestClient) -> None:
    r = client.get("/v1/sentiment")
    assert r.status_code == 405
    assert r.json()["error"]["type"] == "method_not_allowed"
    assert r.headers["x-request-id"]


@pytest.mark.integration
@pytest.mark.parametrize(("level", "access_line"), [("info", False), ("debug", True)])
def test_access_line_only_at_debug_refusals_always(
    tiny_store: Path, tmp_path: Path, level: str, access_line: bool
) -> None:
    with run_server(tiny_store, tmp_path, log_level=level, sessions_per_model=1) as s, s.client() as c:
        ok = c.post("/v1/sentiment", json={"texts": ["great"]}, headers={"x-request-id": "ok-1"})
        bad = c.post("/v1/sentiment", json={"texts": "great"}, headers={"x-request-id": "bad-1"})
        assert (ok.status_code, bad.status_code) == (200, 422)
        c.get("/readyz")
    log = s.log()
    assert ("[ok-1] POST /v1/sentiment 200" in log) is access_line
    assert "WARNING app.access [bad-1] POST /v1/sentiment 422" in log
    ours = [line for line in log.splitlines() if " app.access [" in line]
    assert not [line for line in ours if "/readyz" in line]
