"""A closed-loop HTTP/1.1 load generator on a raw asyncio protocol (keep-alive, one connection per client).

Each of `concurrency` clients sends a request, waits for the whole response, checks it and sends the next:
the offered load follows the server. Requests that complete inside the measured window (after a warm-up)
count. Bodies are serialized once up front and responses are parsed minimally, so that the client spends
little CPU on the 2 cores it shares with the server; its own CPU time is measured and reported.

`python -m bench.loadgen --url http://127.0.0.1:8000 --endpoint sentiment --concurrency 32`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

from bench.payloads import ENDPOINTS, PATHS, Endpoint, Payload
from bench.procstat import cpu_seconds
from bench.stats import CellStats, summarize


class ResponseError(Exception):
    """The server answered something a storefront could not use."""


@dataclass
class LoadResult:
    stats: CellStats
    client_cpu_s: float
    statuses: dict[str, int] = field(default_factory=dict)
    server_cpu_s: float | None = None
    latencies_s: list[float] = field(default_factory=list, repr=False)

    @property
    def server_cpu_pct(self) -> float | None:
        if self.server_cpu_s is None or not self.stats.duration_s:
            return None
        return 100.0 * self.server_cpu_s / self.stats.duration_s

    @property
    def client_cpu_pct(self) -> float:
        return 100.0 * self.client_cpu_s / self.stats.duration_s if self.stats.duration_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.stats),
            "requests_per_s": self.stats.requests_per_s,
            "texts_per_s": self.stats.texts_per_s,
            "client_cpu_s": self.client_cpu_s,
            "client_cpu_pct": self.client_cpu_pct,
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_pct": self.server_cpu_pct,
            "statuses": self.statuses,
        }


def request_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def parse_response(buffer: bytes | bytearray) -> tuple[int, bytes, int] | None:
    """(status, body, bytes used) of the first complete response in `buffer`, None while it is incomplete;
    ValueError when the bytes are not an HTTP/1.1 response this client can read."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    try:
        status = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise ValueError(f"not an HTTP status line: {lines[0][:40]!r}") from exc
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    start = end + 4
    if not chunked:
        stop = start + (length or 0)
        return (status, bytes(buffer[start:stop]), stop) if len(buffer) >= stop else None
    parts = []
    while True:
        size_end = buffer.find(b"\r\n", start)
        if size_end < 0:
            return None
        size = int(bytes(buffer[start:size_end]).split(b";")[0], 16)
        start = size_end + 2
        if len(buffer) < start + size + 2:
            return None
        parts.append(bytes(buffer[start : start + size]))
        start += size + 2
        if size == 0:
            return status, b"".join(parts), start


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection, one request at a time.

    A protocol rather than asyncio streams: the loop hands it the bytes as they arrive and it completes one
    future per response, with the timeout as a timer, where streams plus `asyncio.wait_for` cost a task and
    several coroutine switches per request (this client shares the two cores with the server it measures).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._transport: asyncio.Transport | None = None
        self._lost = False

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        _, protocol = await asyncio.get_running_loop().create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            parsed = parse_response(self._buffer)
        except ValueError as exc:
            waiter.set_exception(exc)
            return
        if parsed is not None:
            status, body, used = parsed
            del self._buffer[:used]
            waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionResetError("the server closed the connection"))

    async def request(self, data: bytes, timeout_s: float) -> tuple[int, bytes]:
        """Send one request and wait for its whole response; TimeoutError after `timeout_s`."""
        if self._lost or self._transport is None:
            raise ConnectionResetError("the connection is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(timeout_s, _expire, waiter)
        self._transport.write(data)
        try:
            return await waiter
        finally:
            timer.cancel()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _expire(waiter: asyncio.Future[tuple[int, bytes]]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no complete response in time"))


def check_body(endpoint: Endpoint, body: bytes) -> None:
    """A 200 must carry results a page could render; raises ResponseError otherwise."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ResponseError("response is not JSON") from exc
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list) or not results:
        raise ResponseError("response has no results")
    first = results[0]
    key = "label" if endpoint == "sentiment" else "score"
    if not isinstance(first, dict) or key not in first:
        raise ResponseError(f"result has no {key!r}")


class _Window:
    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.latencies: list[float] = []
        self.texts = 0
        self.statuses: Counter[str] = Counter()

    def record(self, sent: float, done: float, status: str, texts: int) -> None:
        if not self.start <= done <= self.end:
            return
        self.statuses[status] += 1
        if status == "200":
            self.latencies.append(done - sent)
            self.texts += texts


async def _client(
    index: int,
    host: str,
    port: int,
    endpoint: Endpoint,
    requests: Sequence[tuple[bytes, int]],
    window: _Window,
    timeout_s: float,
    stride: int,
) -> None:
    connection: HttpConnection | None = None
    i = index
    try:
        while time.perf_counter() < window.end:
            data, texts = requests[i % len(requests)]
            i += stride
            sent = time.perf_counter()
            try:
                if connection is None:
                    connection = await HttpConnection.open(host, port)
                status, body = await connection.request(data, timeout_s)
                label = str(status)
                if status == 200:
                    check_body(endpoint, body)
            except ResponseError:
                label = "bad-body"
            except (OSError, TimeoutError, ValueError):
                label = "connection"
                if connection is not None:
                    connection.close()
                connection = None
            window.record(sent, time.perf_counter(), label, texts)
            if label == "429":
                await asyncio.sleep(0.01)  # overloaded: do not spin on rejections
    finally:
        if connection is not None:
            connection.close()


async def run_load(
    url: str,
    payloads: Sequence[Payload],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float = 30.0,
    server_pid: int | None = None,
) -> LoadResult:
    """Closed loop with `concurrency` clients for warmup + duration; only the duration is measured.

    `url` may list several servers separated by commas (replicas): client i talks to server i mod n.

    With `server_pid`, the server's CPU seconds inside the same window are measured too.
    """
    if not payloads:
        raise ValueError("no payloads")
    if concurrency < 1 or duration_s <= 0 or warmup_s < 0:
        raise ValueError("concurrency >= 1, duration > 0 and warmup >= 0 are required")
    targets = [urlsplit(u.strip()) for u in url.split(",") if u.strip()]
    addresses = [(t.hostname or "127.0.0.1", t.port or 80) for t in targets]
    endpoint = payloads[0].endpoint
    host, port = addresses[0]
    requests = [(request_bytes(host, port, PATHS[p.endpoint], p.body), p.texts) for p in payloads]
    now = time.perf_counter()
    window = _Window(now + warmup_s, now + warmup_s + duration_s)
    cpu_at_start: float | None = None
    server_at_start: float | None = None

    async def mark_cpu() -> None:
        nonlocal cpu_at_start, server_at_start
        await asyncio.sleep(warmup_s)
        cpu_at_start = time.process_time()
        server_at_start = cpu_seconds(server_pid) if server_pid else None

    marker = asyncio.ensure_future(mark_cpu())
    tasks = [
        asyncio.ensure_future(
            _client(i, *addresses[i % len(addresses)], endpoint, requests, window, timeout_s, concurrency)
        )
        for i in range(concurrency)
    ]
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    client_cpu = time.process_time() - (cpu_at_start if cpu_at_start is not None else time.process_time())
    server_cpu = (
        cpu_seconds(server_pid) - server_at_start if server_pid and server_at_start is not None else None
    )
    await marker
    # in-flight requests end on their own; their completion lies after the window and is not counted
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()
    stats = summarize(
        window.latencies,
        window.texts,
        sum(n for status, n in window.statuses.items() if status != "200"),
        duration_s,
    )
    return LoadResult(stats, client_cpu, dict(window.statuses), server_cpu, window.latencies)


def use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _load_in_process(args: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    """One load-generator process (for --processes): its result and its raw latencies."""
    from bench.payloads import read_payloads

    use_uvloop()
    payloads = read_payloads(Path(args["payload_file"]))
    result = asyncio.run(
        run_load(
            args["url"],
            payloads[args["offset"] :] + payloads[: args["offset"]],
            concurrency=args["concurrency"],
            duration_s=args["duration"],
            warmup_s=args["warmup"],
        )
    )
    return {
        "client_cpu_s": result.client_cpu_s,
        "statuses": result.statuses,
        "texts": result.stats.texts,
    }, result.latencies_s


def run_processes(
    url: str, payload_file: Path, *, processes: int, concurrency: int, duration_s: float, warmup_s: float
) -> LoadResult:
    """`processes` load generators side by side (where one client process would be the bottleneck)."""
    import multiprocessing

    share = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    jobs = [
        {
            "url": url,
            "payload_file": str(payload_file),
            "offset": i * 97,
            "concurrency": c,
            "duration": duration_s,
            "warmup": warmup_s,
        }
        for i, c in enumerate(share)
        if c > 0
    ]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        parts = pool.map(_load_in_process, jobs)
    latencies = [x for _, lat in parts for x in lat]
    statuses: Counter[str] = Counter()
    for part, _ in parts:
        statuses.update(part["statuses"])
    texts = sum(int(part["texts"]) for part, _ in parts)
    errors = sum(n for status, n in statuses.items() if status != "200")
    stats = summarize(latencies, texts, errors, duration_s)
    return LoadResult(stats, sum(float(p["client_cpu_s"]) for p, _ in parts), dict(statuses), None, latencies)


def main() -> None:
    from bench.paths import DATA_ROOT, movielens_dir
    from bench.payloads import build_payloads, read_payloads, write_payloads

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--endpoint", choices=ENDPOINTS, default="sentiment")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--payloads", type=int, default=2000)
    parser.add_argument("--texts-per-request", type=int, default=1, help="sentiment texts per request")
    parser.add_argument("--payload-file", type=Path, help="replay bodies written by --dump-payloads")
    parser.add_argument("--dump-payloads", type=Path, help="write the bodies as JSON lines and exit")
    parser.add_argument("--processes", type=int, default=1, help="load-generator processes (needs a file)")
    parser.add_argument("--server-pid", type=int, help="also measure this process's CPU in the window")
    args = parser.parse_args()
    if args.payload_file:
        payloads = read_payloads(args.payload_file)
    else:
        payloads = build_payloads(
            DATA_ROOT, movielens_dir(), args.endpoint, args.payloads, texts_per_request=args.texts_per_request
        )
    if args.dump_payloads:
        write_payloads(args.dump_payloads, payloads)
        print(f"wrote {len(payloads)} {payloads[0].endpoint} payloads to {args.dump_payloads}")
        return
    endpoint = payloads[0].endpoint
    if args.processes > 1:
        if not args.payload_file:
            parser.error("--processes needs --payload-file")
        result = run_processes(
            args.url,
            args.payload_file,
            processes=args.processes,
            concurrency=args.concurrency,
            duration_s=args.duration,
            warmup_s=args.warmup,
        )
    else:
        use_uvloop()
        result = asyncio.run(
            run_load(
                args.url,
                payloads,
                concurrency=args.concurrency,
                duration_s=args.duration,
                warmup_s=args.warmup,
                server_pid=args.server_pid,
            )
        )
    texts = sum(p.texts for p in payloads) / len(payloads)
    print(
        json.dumps(
            {
                "endpoint": endpoint,
                "concurrency": args.concurrency,
                "processes": args.processes,
                "texts_per_request": round(texts, 1),
                **result.as_dict(),
            }
        )
    )


if __name__ == "__main__":
    main()
