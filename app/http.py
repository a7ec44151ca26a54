"""uvicorn's httptools protocol plus one ASGI extension for the hot path: a complete response in one write.

`python -m app` selects it (`make run`, the image, k8s, the benchmarks and the tests). Each
request's scope then carries `scope["extensions"][WHOLE_RESPONSE]`, a function `(status, headers, body) ->
bool` that writes the status line, headers and body with one `transport.write` (one system call instead of
two) and completes the response as uvicorn's own `send` would (keep-alive, `connection: close`, pipelining).
Profiles of the service under load put uvicorn's `RequestResponseCycle.send` at 19% of the samples holding
the GIL: two writes and two regex checks per header for every response.

The function returns False, and writes nothing, whenever the plain ASGI path must run instead: the response
has started, writing is paused (back-pressure), uvicorn's access log is on, or the headers carry
`connection`. `app.middleware` uses it for the answers of its fast handlers and falls back to the two ASGI
messages under any other server.

The protocol also bounds how long a request's headers may take (`header_timeout_s`, from
INFERENCE_HEADER_TIMEOUT_S via `python -m app`): uvicorn has no such timer, so a client that opens a
connection and sends nothing, or trickles its headers (slowloris), would hold it, and a share of the
connection cap, forever. The body's own deadline is the middleware's.

This subclasses uvicorn's httptools protocol, which is not a public API: uvicorn is pinned to an exact
version in pyproject.toml, and tests/app/test_http.py fails when the internals used here move.
"""

from __future__ import annotations

import asyncio
import functools
import re
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from app.middleware import WHOLE_RESPONSE, Headers

# The characters uvicorn refuses in header names and values (its HEADER_RE / HEADER_VALUE_RE). Checked once
# over all names and once over all values instead of per header.
_BAD_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


def write_whole_response(cycle: RequestResponseCycle, status: int, headers: Headers, body: bytes) -> bool:
    """Write a complete response on `cycle` (headers must include content-length); False when it did not."""
    if cycle.response_started or cycle.flow.write_paused or cycle.access_log:
        return False
    if any(name == b"connection" for name, _ in headers):
        return False  # uvicorn's send also acts on the header (closes after the response)
    if cycle.disconnected:
        return True  # like uvicorn's send: nobody left to answer, nothing to do
    all_headers = [*cycle.default_headers, *headers]
    if _BAD_NAME.search(b"".join(name for name, _ in all_headers)) or _BAD_VALUE.search(
        b"".join(value for _, value in all_headers)
    ):
        raise RuntimeError("Invalid HTTP header name or value.")
    content = [STATUS_LINE[status]]
    for name, value in all_headers:
        content.extend((name, b": ", value, b"\r\n"))
    if not cycle.keep_alive:
        content.append(b"connection: close\r\n")
    content.extend((b"\r\n", body))
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.transport.write(b"".join(content))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True


class ServiceHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose requests offer the WHOLE_RESPONSE extension and whose headers must arrive
    within `header_timeout_s` (see the module docstring)."""

    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_header_timeout(cls, seconds: float) -> type[ServiceHttpProtocol]:
        return type(cls.__name__, (cls,), {"header_timeout_s": seconds})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.logger.warning("closing a connection: request headers took over %gs", self.header_timeout_s)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()
        cycle: Any = self.cycle
        # On a protocol upgrade uvicorn returns before making a cycle for this request: offer nothing.
        if cycle is not None and cycle.scope is self.scope:
            extensions = self.scope.setdefault("extensions", {})
            extensions[WHOLE_RESPONSE] = functools.partial(write_whole_response, cycle)
