"""app.http: the one-write response extension on uvicorn's httptools protocol, driven with raw request bytes
through a real protocol instance and event loop (the transport records what would go on the wire)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.http import ServiceHttpProtocol, write_whole_response
from app.middleware import WHOLE_RESPONSE, Headers

BODY = b'{"results":[{"label":"positive"}]}'
HEADERS: Headers = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
    (b"x-model", b"review-sentiment"),
]
REQUEST_BODY = b'{"texts":["good"]}'
POST = (
    b"POST /v1/sentiment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(REQUEST_BODY), REQUEST_BODY)
)


class RecordingTransport(asyncio.Transport):
    """What the protocol writes, one entry per `write` call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.closed_by_server = False  # closed before the client went away

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


async def answer(scope: Any, receive: Any, send: Any) -> None:
    """Reads the request, answers through the extension when offered, else with the two ASGI messages."""
    while (await receive()).get("more_body"):
        pass
    write_whole = scope.get("extensions", {}).get(WHOLE_RESPONSE)
    if write_whole is not None and write_whole(200, HEADERS, BODY):
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def serve(
    protocol_class: type[HttpToolsProtocol], data: bytes, *, pause_writing: bool = False, app: Any = answer
) -> RecordingTransport:
    async def run() -> RecordingTransport:
        config = Config(app=app, http=protocol_class, log_level="warning", access_log=False)
        state = ServerState()
        state.default_headers = [(b"server", b"uvicorn")]
        protocol = protocol_class(config=config, server_state=state, app_state={})
        transport = RecordingTransport()
        protocol.connection_made(transport)
        if pause_writing:
            protocol.pause_writing()
            asyncio.get_running_loop().call_later(0.05, protocol.resume_writing)
        protocol.data_received(data)
        for _ in range(100):
            await asyncio.sleep(0.005)
            if not state.tasks and not protocol.pipeline:
                break
        transport.closed_by_server = transport.closed
        protocol.connection_lost(None)
        return transport

    return asyncio.run(run())


def test_the_whole_response_is_one_write_of_the_bytes_uvicorn_would_send() -> None:
    fast = serve(ServiceHttpProtocol, POST)
    plain = serve(HttpToolsProtocol, POST)
    assert len(fast.writes) == 1
    assert len(plain.writes) == 2
    assert fast.writes[0] == b"".join(plain.writes)
    assert fast.writes[0].startswith(b"HTTP/1.1 200 OK\r\nserver: uvicorn\r\ncontent-type: application/json")
    assert fast.writes[0].endswith(b"\r\n\r\n" + BODY)
    assert not fast.closed_by_server


def test_pipelined_requests_on_a_kept_alive_connection_are_answered_in_order() -> None:
    fast = serve(ServiceHttpProtocol, POST * 3)
    plain = serve(HttpToolsProtocol, POST * 3)
    assert len(fast.writes) == 3
    assert b"".join(fast.writes) == b"".join(plain.writes)
    assert not fast.closed_by_server


def test_an_http_1_0_request_gets_connection_close_and_the_connection_is_closed() -> None:
    request = POST.replace(b"HTTP/1.1", b"HTTP/1.0")
    fast = serve(ServiceHttpProtocol, request)
    plain = serve(HttpToolsProtocol, request)
    assert fast.writes == [b"".join(plain.writes)]
    assert b"\r\nconnection: close\r\n" in fast.writes[0]
    assert fast.closed_by_server
    assert plain.closed_by_server


def test_under_back_pressure_the_plain_asgi_path_answers() -> None:
    fast = serve(ServiceHttpProtocol, POST, pause_writing=True)
    assert len(fast.writes) == 2  # the extension declined; uvicorn's send waited for the drain
    assert b"".join(fast.writes) == b"".join(serve(HttpToolsProtocol, POST).writes)


def test_uvicorns_own_protocol_offers_no_extension() -> None:
    seen: list[bool] = []

    async def probe(scope: Any, receive: Any, send: Any) -> None:
        seen.append(WHOLE_RESPONSE in scope.get("extensions", {}))
        await answer(scope, receive, send)

    serve(HttpToolsProtocol, POST, app=probe)
    serve(ServiceHttpProtocol, POST, app=probe)
    assert seen == [False, True]


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ([(b"x-model", b"evil\r\nset-cookie: a=b")], "Invalid HTTP header"),
        ([(b"bad name", b"v")], "Invalid HTTP header"),
    ],
)
def test_header_injection_is_refused_like_uvicorn_does(headers: Headers, error: str) -> None:
    results: list[BaseException] = []

    async def inject(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        try:
            scope["extensions"][WHOLE_RESPONSE](200, [*HEADERS, *headers], BODY)
        except RuntimeError as exc:
            results.append(exc)
            raise

    transport = serve(ServiceHttpProtocol, POST, app=inject)
    assert len(results) == 1
    assert error in str(results[0])
    assert transport.writes[0].startswith(b"HTTP/1.1 500 ")  # uvicorn's answer to an app that raised


def test_a_connection_header_is_left_to_uvicorns_send() -> None:
    async def closing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [*HEADERS, (b"connection", b"close")]
        assert not scope["extensions"][WHOLE_RESPONSE](413, headers, BODY)
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})

    transport = serve(ServiceHttpProtocol, POST, app=closing)
    assert transport.writes[0].startswith(b"HTTP/1.1 413 ")
    assert transport.closed_by_server


def test_a_started_response_is_not_written_twice() -> None:
    async def started(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        assert not scope["extensions"][WHOLE_RESPONSE](200, HEADERS, BODY)
        await send({"type": "http.response.body", "body": BODY})

    transport = serve(ServiceHttpProtocol, POST, app=started)
    assert b"".join(transport.writes) == b"".join(serve(HttpToolsProtocol, POST).writes)


def test_write_whole_response_is_what_the_protocol_offers() -> None:
    offered: list[Any] = []

    async def grab(scope: Any, receive: Any, send: Any) -> None:
        offered.append(scope["extensions"][WHOLE_RESPONSE])
        await answer(scope, receive, send)

    serve(ServiceHttpProtocol, POST, app=grab)
    assert offered[0].func is write_whole_response


def test_every_launcher_starts_the_server_with_python_m_app() -> None:
    from bench.servers import SERVICE_FACTORY, server_command
    from tests.app.server import REPO

    argv, env = server_command(SERVICE_FACTORY, 8123)
    assert argv[1:] == ["-m", "app"]
    assert env == {"INFERENCE_HOST": "127.0.0.1", "INFERENCE_PORT": "8123"}
    assert "$(PY) -m app" in (REPO / "Makefile").read_text()
    assert 'CMD ["python", "-m", "app"]' in (REPO / "Dockerfile").read_text()


def test_the_console_script_is_python_m_app() -> None:
    import tomllib

    from tests.app.server import REPO

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"storefront-inference": "app.__main__:main"}


@pytest.mark.integration
def test_the_design_documents_uvicorn_command_still_serves(tiny_store: Path, tmp_path: Path) -> None:
    """DESIGN.md's `uvicorn --factory app.main:create_app` (without python -m app's options) still works."""
    import contextlib
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.app.server import REPO, free_port

    port = free_port()
    env = {**os.environ, "INFERENCE_MODEL_STORE": str(tiny_store)}
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--port", str(port)]
    with (tmp_path / "uvicorn.log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline and status != 200 and proc.poll() is None:
            time.sleep(0.2)
            with contextlib.suppress(httpx.TransportError):
                status = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
        assert status == 200, (tmp_path / "uvicorn.log").read_text()
        r = httpx.post(f"http://127.0.0.1:{port}/v1/sentiment", json={"texts": ["great"]}, timeout=10)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_python_m_app_configures_uvicorn_from_the_settings() -> None:
    from app.__main__ import server_config
    from app.settings import Settings

    config = server_config(
        Settings(port=8124, max_connections=7, shutdown_timeout_s=3, header_timeout_s=2.5)  # type: ignore[arg-type]
    )
    assert (config.host, config.port) == ("127.0.0.1", 8124)
    assert config.factory
    assert config.app == "app.main:create_app"
    assert config.access_log is False
    assert config.limit_concurrency == 7
    assert config.timeout_graceful_shutdown == 3
    assert isinstance(config.http, type)
    assert issubclass(config.http, ServiceHttpProtocol)
    assert config.http.header_timeout_s == 2.5


def test_uvicorn_is_pinned_and_its_internals_are_where_app_http_uses_them() -> None:
    """app.http subclasses uvicorn's private httptools protocol: a new uvicorn must fail here first."""
    import re

    import uvicorn
    from uvicorn.protocols.http import httptools_impl

    from tests.app.server import REPO

    pinned = re.search(r'"uvicorn\[standard\]==([0-9.]+)"', (REPO / "pyproject.toml").read_text())
    assert pinned is not None, "pyproject.toml must pin uvicorn to an exact version"
    assert uvicorn.__version__ == pinned.group(1)
    for method in ("connection_made", "connection_lost", "on_message_begin", "on_headers_complete"):
        assert callable(getattr(HttpToolsProtocol, method))
    assert isinstance(httptools_impl.STATUS_LINE, dict)
    cycle_fields = (
        "response_started", "flow", "access_log", "disconnected", "default_headers", "keep_alive",
        "transport", "waiting_for_100_continue", "response_complete", "message_event", "on_response",
    )  # fmt: skip

    seen: dict[str, object] = {}

    async def grab(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        cycle = scope["extensions"][WHOLE_RESPONSE].args[0]
        seen.update({name: getattr(cycle, name) for name in cycle_fields if hasattr(cycle, name)})
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    serve(ServiceHttpProtocol, POST, app=grab)
    assert set(seen) == set(cycle_fields)


def open_connection(
    protocol_class: type[HttpToolsProtocol], data: bytes, wait_s: float
) -> RecordingTransport:
    """A connection that sends `data` (maybe an incomplete request) and then nothing for `wait_s`."""

    async def run() -> RecordingTransport:
        config = Config(app=answer, http=protocol_class, log_level="warning", access_log=False)
        state = ServerState()
        state.default_headers = []
        protocol = protocol_class(config=config, server_state=state, app_state={})
        transport = RecordingTransport()
        protocol.connection_made(transport)
        if data:
            protocol.data_received(data)
        await asyncio.sleep(wait_s)
        transport.closed_by_server = transport.closed
        protocol.connection_lost(None)
        return transport

    return asyncio.run(run())


@pytest.mark.parametrize(
    "data",
    [b"", b"POST /v1/sentiment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"],
    ids=["silent", "headers-cut-short"],
)
def test_a_connection_whose_headers_do_not_arrive_in_time_is_closed(data: bytes) -> None:
    quick = ServiceHttpProtocol.with_header_timeout(0.05)
    assert open_connection(quick, data, wait_s=0.2).closed_by_server
    assert not open_connection(HttpToolsProtocol, data, wait_s=0.2).closed_by_server  # uvicorn alone waits


def test_a_request_whose_headers_arrived_is_not_cut_by_the_header_timer() -> None:
    quick = ServiceHttpProtocol.with_header_timeout(0.05)
    headers_only = POST[: POST.index(b"\r\n\r\n") + 4]  # the body is the middleware's to time
    transport = open_connection(quick, headers_only, wait_s=0.2)
    assert not transport.closed_by_server
