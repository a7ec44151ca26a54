"""A real server on the tiny model store, shared by the ops tests that only need to talk to one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.processes import Server


@pytest.fixture(scope="session")
def tiny_server(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tiny_store, tmp_path_factory.mktemp("tiny-server")) as server:
        server.wait_ready()
        yield server
