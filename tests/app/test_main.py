from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.engine import EngineConfig, ModelEngine
from app.errors import Draining
from app.main import _drain_then_exit, create_app
from app.metrics import Metrics
from app.registry import ServedModel
from app.runtime import CPU, OnnxRuntime, RuntimeOptions
from app.service import Service
from app.settings import Settings
from app.store import ModelStore


def test_drain_timeout_refuses_what_is_still_queued_then_exits(
    tiny_store: Path, make_settings: Callable[..., Settings]
) -> None:
    verified = ModelStore(tiny_store).load_verified("review-sentiment", "1")
    metrics = Metrics()
    service = Service(make_settings(), metrics)
    engine = ModelEngine(
        "review-sentiment", "1", [OnnxRuntime(verified, RuntimeOptions())], EngineConfig(), metrics
    )
    service.registry._served["review-sentiment"] = ServedModel(verified.manifest, engine, CPU, 64, 1)
    forwarded: list[float] = []

    async def scenario() -> None:
        job = engine.submit(["stuck: no worker was started"], time.monotonic() + 60)
        service.begin_drain()
        started = time.monotonic()
        await _drain_then_exit(service, 0.3, lambda: forwarded.append(time.monotonic() - started))
        with pytest.raises(Draining):
            await job.future

    asyncio.run(scenario())
    assert len(forwarded) == 1
    assert forwarded[0] >= 0.3


def test_create_app_reads_the_environment_only_when_called(
    tiny_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERENCE_MODEL_STORE", str(tiny_store))
    monkeypatch.setenv("INFERENCE_QUEUE_CAPACITY", "11")
    app = create_app()
    assert app.state.settings.queue_capacity == 11
    assert app.state.settings.model_store == tiny_store
    other = create_app(Settings(model_store=tiny_store, queue_capacity=5))
    assert other.state.metrics.registry is not app.state.metrics.registry
