"""Dependencies shared by the routers, as `Annotated` aliases.

All of them are `async def`: FastAPI runs plain `def` dependencies in a thread pool, a thread hop per
dependency per request on the hot path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Receive

from app.service import Service

_bearer = HTTPBearer(auto_error=False, description="INFERENCE_API_TOKEN, when the server sets one.")


async def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def bearer_token(_: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Declares the bearer scheme in the OpenAPI document. The check itself is made for every path,
    before the body is read, by `app.middleware.AccessTokens`."""


async def require_accepting(service: ServiceDep) -> None:
    """503 while the models load or the server drains."""
    service.check_accepting()


# A request answered within this long never starts a disconnect watch: a task per request was ~6% of
# the event loop's time at c=32. A client that leaves later is still noticed within this delay, long
# before its queued texts reach a model under the load where dropping them matters.
DISCONNECT_WATCH_AFTER_S = 0.05


class Call:
    """Per-request context handed to the engine: its deadline and a future set when the client leaves."""

    __slots__ = ("_timer", "_watch", "deadline", "disconnected")

    def __init__(self, deadline: float, receive: Receive) -> None:
        loop = asyncio.get_running_loop()
        self.deadline = deadline
        self.disconnected: asyncio.Future[object] = loop.create_future()
        self._watch: asyncio.Task[None] | None = None
        self._timer = loop.call_later(DISCONNECT_WATCH_AFTER_S, self._start_watch, receive)

    def _start_watch(self, receive: Receive) -> None:
        self._watch = asyncio.ensure_future(self._wait_disconnect(receive))

    async def _wait_disconnect(self, receive: Receive) -> None:
        # The body has been read by now, so the next ASGI message is http.disconnect.
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self.disconnected.done():
            self.disconnected.set_result(None)

    def close(self) -> None:
        self._timer.cancel()
        if self._watch is not None:
            self._watch.cancel()
        if not self.disconnected.done():
            self.disconnected.cancel()


def open_call(service: Service, started: float, receive: Receive) -> Call:
    """The call context of a request whose body has been read; `close_call` it when answered."""
    return Call(started + service.settings.request_timeout_s, receive)


def close_call(call: Call) -> None:
    call.close()


async def call_context(request: Request, service: ServiceDep) -> AsyncIterator[Call]:
    started = request.scope.get("state", {}).get("started_at", time.monotonic())
    call = open_call(service, started, request.receive)
    try:
        yield call
    finally:
        close_call(call)


CallDep = Annotated[Call, Depends(call_context)]
