"""The per-request call context: its disconnect watch starts only for requests still running."""

from __future__ import annotations

import asyncio

from starlette.types import Message

from app.api.dependencies import DISCONNECT_WATCH_AFTER_S, Call


class _Receive:
    """An ASGI receive whose client has gone: every message is http.disconnect; counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> Message:
        self.calls += 1
        return {"type": "http.disconnect"}


def test_a_client_that_leaves_is_noticed_once_the_watch_starts() -> None:
    receive = _Receive()

    async def scenario() -> None:
        call = Call(deadline=0.0, receive=receive)
        assert not call.disconnected.done()
        await asyncio.wait_for(call.disconnected, timeout=10 * DISCONNECT_WATCH_AFTER_S + 5)
        assert call.disconnected.result() is None
        call.close()

    asyncio.run(scenario())
    assert receive.calls == 1


def test_a_call_closed_early_never_reads_from_the_client() -> None:
    receive = _Receive()

    async def scenario() -> None:
        call = Call(deadline=0.0, receive=receive)
        call.close()
        assert call.disconnected.cancelled()
        await asyncio.sleep(2 * DISCONNECT_WATCH_AFTER_S)

    asyncio.run(scenario())
    assert receive.calls == 0
