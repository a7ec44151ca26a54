"""Slow, stalled and flooding clients against a real server process on 127.0.0.1: the body deadline (408),
the header deadline (slowloris), the connection cap, and a shutdown that ends even under a stalled upload."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.server import Server, run_server

pytestmark = pytest.mark.integration

BODY = b'{"texts": ["fine"]}'


def connect(server: Server) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def headers(length: int, path: str = "/v1/sentiment") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True when the server closes the connection within `timeout` (recv returns b"" or resets)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture(scope="module")
def server(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(
        tiny_store,
        tmp_path_factory.mktemp("logs"),
        sessions_per_model=1,
        body_timeout_s=1,
        header_timeout_s=1,
        max_connections=24,
    ) as s:
        yield s


def test_a_body_that_does_not_arrive_in_time_is_408_and_the_connection_closed(server: Server) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(headers(len(BODY)) + BODY[:5])  # the rest never comes
        answer = read_until_closed(sock, timeout=10)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"type":"body_timeout"' in answer
    assert b"connection: close" in answer.lower()
    assert 0.9 < took < 5


def test_slowloris_connections_are_closed_and_do_not_block_others(server: Server) -> None:
    """20 connections trickle their headers a byte at a time; requests from others are answered meanwhile,
    and the server closes each trickling connection once its headers are past the header deadline."""
    trickling = [connect(server) for _ in range(20)]
    request = headers(len(BODY))
    try:
        answered = []
        started = time.monotonic()
        for step in range(12):  # bounded: 12 bytes per connection over ~1.2 s
            for sock in trickling:
                with contextlib.suppress(OSError):
                    sock.sendall(request[step : step + 1])
            r = httpx.post(
                server.base_url + "/v1/sentiment", content=BODY, headers={"content-type": "application/json"}
            )
            answered.append(r.status_code)
            time.sleep(0.1)
        assert answered == [200] * 12
        closed = [
            closed_by_server(sock, timeout=max(0.1, started + 4 - time.monotonic())) for sock in trickling
        ]
        assert all(closed)
    finally:
        for sock in trickling:
            sock.close()


def test_connections_over_the_cap_are_refused_until_idle_ones_time_out(server: Server) -> None:
    idle = [connect(server) for _ in range(24)]  # the cap; none sends a byte
    try:
        time.sleep(0.2)
        refused = httpx.post(
            server.base_url + "/v1/sentiment", content=BODY, headers={"content-type": "application/json"}
        )
        assert refused.status_code == 503
        assert all(closed_by_server(sock, timeout=4) for sock in idle)  # header deadline: 1 s
    finally:
        for sock in idle:
            sock.close()
    r = httpx.post(
        server.base_url + "/v1/sentiment", content=BODY, headers={"content-type": "application/json"}
    )
    assert r.status_code == 200


def test_sigterm_with_a_stalled_upload_exits_within_its_bound(tiny_store: Path, tmp_path: Path) -> None:
    """The drain does not wait for a body that never comes, uvicorn's graceful shutdown gives up on its
    connection after INFERENCE_SHUTDOWN_TIMEOUT_S, and the lifespan shutdown (the engines stop) still runs."""
    drain_s, shutdown_s = 3.0, 2.0
    settings = {
        "drain_timeout_s": drain_s,
        "shutdown_timeout_s": shutdown_s,
        "body_timeout_s": 60,  # the stalled upload outlives the whole shutdown
        "header_timeout_s": 60,
    }
    with run_server(tiny_store, tmp_path, **settings) as s, connect(s) as stalled:
        stalled.sendall(headers(1000) + b'{"texts": ["')
        time.sleep(0.3)
        started = time.monotonic()
        code = s.terminate(timeout=drain_s + shutdown_s + 10)
        took = time.monotonic() - started
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled once it is done
    assert took < drain_s + shutdown_s + 1.5, took
    log = s.log()
    assert "engines stopped" in log
    assert "Application shutdown complete" in log
