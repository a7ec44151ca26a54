"""The load generator against real asyncio HTTP servers on 127.0.0.1 (bounded: well under a second each)."""

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bench.loadgen import HttpConnection, ResponseError, check_body, parse_response, run_load
from bench.payloads import Payload
from bench.procstat import cpu_seconds, memory_kib

Handler = Callable[[bytes], Awaitable[tuple[int, bytes, bool]]]


@asynccontextmanager
async def http_server(handler: Handler) -> AsyncIterator[str]:
    """A minimal keep-alive HTTP/1.1 server: `handler(body)` -> (status, body, chunked)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                status, body, chunked = await handler(await reader.readexactly(length))
                if chunked:
                    half = len(body) // 2
                    payload = b"".join(
                        f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:half], body[half:])
                    )
                    writer.write(
                        f"HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                        + payload
                        + b"0\r\n\r\n"
                    )
                else:
                    writer.write(
                        f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def sentiment(n: int) -> list[Payload]:
    return [Payload("sentiment", json.dumps({"texts": [f"text {i}"]}).encode(), 1) for i in range(n)]


async def good(body: bytes) -> tuple[int, bytes, bool]:
    texts = json.loads(body)["texts"]
    await asyncio.sleep(0.002)
    return 200, json.dumps({"results": [{"label": "positive", "score": 0.9} for _ in texts]}).encode(), False


def test_closed_loop_counts_completed_requests_and_texts() -> None:
    async def main() -> None:
        async with http_server(good) as url:
            result = await run_load(
                url, sentiment(10), concurrency=4, duration_s=0.4, warmup_s=0.1, server_pid=os.getpid()
            )
        stats = result.stats
        assert stats.requests > 10
        assert stats.texts == stats.requests
        assert stats.errors == 0
        assert result.statuses == {"200": stats.requests}
        assert stats.p50_ms >= 2.0  # every request waited for the server's sleep
        assert result.client_cpu_s >= 0
        assert result.server_cpu_s is not None

    asyncio.run(main())


def test_errors_and_bad_bodies_are_counted_not_timed() -> None:
    calls = 0

    async def flaky(body: bytes) -> tuple[int, bytes, bool]:
        nonlocal calls
        calls += 1
        if calls % 3 == 0:
            return 503, b'{"error": {"type": "x", "message": "y"}}', False
        if calls % 3 == 1:
            return 200, b'{"results": []}', False
        return 200, b'{"results": [{"label": "negative", "score": 0.6}]}', True

    async def main() -> None:
        async with http_server(flaky) as url:
            result = await run_load(url, sentiment(5), concurrency=2, duration_s=0.3, warmup_s=0.0)
        assert result.statuses.get("503", 0) > 0
        assert result.statuses.get("bad-body", 0) > 0
        assert result.statuses.get("200", 0) > 0  # the chunked answers parse
        assert result.stats.errors == result.statuses["503"] + result.statuses["bad-body"]
        assert result.stats.requests == result.statuses["200"]

    asyncio.run(main())


def test_refused_connections_are_errors() -> None:
    async def main() -> None:
        async with http_server(good) as url:
            pass  # closed again: nothing listens on this port now
        result = await run_load(url, sentiment(2), concurrency=2, duration_s=0.2, warmup_s=0.0)
        assert result.stats.requests == 0
        assert result.statuses.get("connection", 0) > 0

    asyncio.run(main())


def test_run_load_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no payloads"):
        asyncio.run(run_load("http://127.0.0.1:1", [], concurrency=1, duration_s=1, warmup_s=0))
    with pytest.raises(ValueError, match="concurrency"):
        asyncio.run(run_load("http://127.0.0.1:1", sentiment(1), concurrency=0, duration_s=1, warmup_s=0))


def test_parse_response_reads_length_and_chunked_bodies_and_waits_for_the_rest() -> None:
    plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"
    assert parse_response(plain) == (200, b"hi", len(plain))
    assert parse_response(plain + b"HTTP/1.1 200") == (200, b"hi", len(plain))
    chunked = b"HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert parse_response(chunked) == (429, b"abcde", len(chunked))
    for raw in (plain, chunked):
        assert all(parse_response(raw[:cut]) is None for cut in range(len(raw)))
    with pytest.raises(ValueError, match="status line"):
        parse_response(b"garbage\r\n\r\n")


def test_a_connection_answers_in_order_and_times_out_on_a_silent_server() -> None:
    async def slow(body: bytes) -> tuple[int, bytes, bool]:
        await asyncio.sleep(0.5 if body == b"slow" else 0)
        return 200, body.upper(), body == b"chunk"

    def post(body: bytes) -> bytes:
        return b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    async def go() -> None:
        async with http_server(slow) as url:
            host, port = url.removeprefix("http://").split(":")
            connection = await HttpConnection.open(host, int(port))
            assert await connection.request(post(b"one"), 5.0) == (200, b"ONE")
            assert await connection.request(post(b"chunk"), 5.0) == (200, b"CHUNK")
            with pytest.raises(TimeoutError):
                await connection.request(post(b"slow"), 0.05)
            connection.close()

    asyncio.run(go())


def test_check_body_wants_results_with_the_endpoint_field() -> None:
    check_body("sentiment", b'{"results": [{"label": "positive"}]}')
    check_body("rank", b'{"results": [{"id": "a", "score": 1.0}]}')
    for bad in (b"nope", b"[]", b'{"results": []}', b'{"results": [{"score": 1}]}'):
        with pytest.raises(ResponseError):
            check_body("sentiment", bad)


def test_procstat_reads_this_process() -> None:
    assert cpu_seconds(os.getpid()) > 0
    memory = memory_kib(os.getpid())
    assert memory["VmHWM"] >= memory["VmRSS"] > 0


def test_several_client_processes_add_up(tmp_path: Path) -> None:
    from bench.loadgen import run_processes
    from bench.payloads import write_payloads

    write_payloads(tmp_path / "s.jsonl", sentiment(20))

    async def main() -> None:
        async with http_server(good) as url:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(
                None,
                lambda: run_processes(
                    url, tmp_path / "s.jsonl", processes=2, concurrency=3, duration_s=0.5, warmup_s=0.2
                ),
            )
        assert result.stats.requests == result.statuses["200"] > 0
        assert len(result.latencies_s) == result.stats.requests

    asyncio.run(main())
