"""Fixtures of the app tests: settings pointing at the tiny store, loaded runtimes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings


@pytest.fixture
def make_settings(tiny_store: Path) -> Any:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"model_store": tiny_store, "sessions_per_model": 1}
        values.update(overrides)
        return Settings(**values)

    return make
