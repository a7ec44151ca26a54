from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.errors import ModelNotFound
from app.metrics import Metrics
from app.registry import ModelRegistry
from app.runtime import CPU
from app.settings import Settings


def copy_version(store: Path, name: str, source: str, target: str) -> Path:
    folder = store / name / target
    shutil.copytree(store / name / source, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = target
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def store(tiny_store: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(tiny_store, root)
    return root


def served_versions(registry: ModelRegistry) -> dict[str, str]:
    return {s.name: s.version for s in registry.served()}


def run(registry: ModelRegistry, *steps: Callable[[], Any]) -> list[Any]:
    async def scenario() -> list[Any]:
        results = []
        for step in steps:
            out = step()
            results.append(await out if asyncio.iscoroutine(out) else out)
        await registry.close(10)
        return results

    return asyncio.run(scenario())


def make(store: Path, **overrides: Any) -> tuple[ModelRegistry, Metrics]:
    metrics = Metrics()
    settings = Settings(model_store=store, sessions_per_model=1, **overrides)
    return ModelRegistry(settings, metrics, CPU), metrics


def failures_metric(metrics: Metrics, name: str, version: str, reason: str = "checksum") -> float:
    return (
        metrics.registry.get_sample_value(
            "inference_model_load_failures_total", {"name": name, "version": version, "reason": reason}
        )
        or 0.0
    )


def test_newest_version_is_served_and_a_broken_newer_one_is_refused(store: Path) -> None:
    copy_version(store, "review-sentiment", "1", "2")
    broken = copy_version(store, "review-sentiment", "1", "3")
    (broken / "tokenizer.json").write_text("{}")
    registry, metrics = make(store)
    (changed,) = run(registry, lambda: registry.refresh(retry_failed=True))
    assert "review-sentiment/2" in changed
    assert failures_metric(metrics, "review-sentiment", "3") == 1
    assert registry.failures[("review-sentiment", "3")].reason == "checksum"


def test_a_refresh_swaps_in_a_new_version_and_keeps_failures_until_retried(store: Path) -> None:
    registry, metrics = make(store)

    def publish_broken() -> None:
        folder = copy_version(store, "product-embedder", "1", "2")
        data = bytearray((folder / "model.onnx").read_bytes())
        data[500] ^= 0xFF
        (folder / "model.onnx").write_bytes(bytes(data))

    def repair() -> None:
        shutil.rmtree(store / "product-embedder" / "2")
        copy_version(store, "product-embedder", "1", "2")

    results = run(
        registry,
        lambda: registry.refresh(retry_failed=True),
        publish_broken,
        lambda: registry.refresh(),
        lambda: served_versions(registry),
        lambda: registry.refresh(),  # a poll does not retry a refused version
        repair,
        lambda: registry.refresh(retry_failed=True),
        lambda: served_versions(registry),
    )
    assert results[2] == []
    assert results[3]["product-embedder"] == "1"
    assert results[4] == []
    assert failures_metric(metrics, "product-embedder", "2") == 1
    assert results[6] == ["product-embedder/2"]
    assert results[7]["product-embedder"] == "2"
    assert ("product-embedder", "2") not in registry.failures


def test_pins_choose_the_version(store: Path) -> None:
    copy_version(store, "review-sentiment", "1", "2")
    registry, _ = make(store, pinned_versions={"review-sentiment": "1", "product-embedder": "4"})
    (versions,) = run(
        registry, lambda: registry.refresh(retry_failed=True), lambda: served_versions(registry)
    )[1:]
    assert versions["review-sentiment"] == "1"
    assert "product-embedder" not in versions
    assert registry.failures[("product-embedder", "4")].reason == "missing"


def test_lookups_name_what_is_missing(store: Path) -> None:
    registry, _ = make(store)

    def check() -> None:
        assert registry.get("review-sentiment").version == "1"
        with pytest.raises(ModelNotFound, match="not served"):
            registry.get("nope")
        with pytest.raises(ModelNotFound, match="version '9'"):
            registry.get("review-sentiment", "9")

    run(registry, lambda: registry.refresh(retry_failed=True), check)


def with_max_length(folder: Path, max_length: int) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["max_sequence_length"] = max_length
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_version_longer_than_the_batch_token_budget_is_refused_and_the_older_one_serves(
    store: Path,
) -> None:
    with_max_length(copy_version(store, "review-sentiment", "1", "2"), 4096)
    registry, metrics = make(store)  # max_batch_tokens 2048 < 4096

    def check() -> None:
        assert served_versions(registry) == {
            "product-embedder": "1",
            "product-recommender": "1",
            "product-reranker": "1",
            "review-sentiment": "1",
        }
        failure = registry.failures[("review-sentiment", "2")]
        assert failure.reason == "settings"
        assert "INFERENCE_MAX_BATCH_TOKENS" in failure.message

    run(registry, lambda: registry.refresh(retry_failed=True), check)
    assert failures_metric(metrics, "review-sentiment", "2", "settings") == 1


def test_polling_does_not_retry_a_refused_version_but_other_models_roll_out(store: Path) -> None:
    registry, metrics = make(store)

    def publish() -> None:
        with_max_length(copy_version(store, "review-sentiment", "1", "2"), 4096)
        copy_version(store, "product-embedder", "1", "2")

    run(
        registry,
        lambda: registry.refresh(retry_failed=True),
        publish,
        lambda: registry.refresh(),
        lambda: registry.refresh(),
        lambda: registry.refresh(),
    )
    assert failures_metric(metrics, "review-sentiment", "2", "settings") == 1  # once, not every poll
    assert ("product-embedder", "2") not in registry.failures


@pytest.mark.parametrize("folder", ["²", "v2", "02", "1.5", "3 ", "999999999999999999999", "-1"])
def test_folders_that_are_not_version_numbers_are_ignored_with_a_warning(store: Path, folder: str) -> None:
    copy_version(store, "review-sentiment", "1", folder)
    registry, _ = make(store)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("app.store")
    logger.addHandler(handler)
    try:
        *_, served = run(
            registry,
            lambda: registry.refresh(retry_failed=True),
            lambda: registry.refresh(),
            lambda: served_versions(registry),
        )
    finally:
        logger.removeHandler(handler)
    assert served["review-sentiment"] == "1"
    warnings = [r.getMessage() for r in records if "ignoring" in r.getMessage()]
    assert len(warnings) == 1  # once per folder, not on every scan
    assert "not a version number" in warnings[0]


def test_polling_rolls_in_a_new_version_and_the_cache_forgets_the_old_one(store: Path) -> None:
    import time

    from app.cache import CachedEmbedding, text_key
    from app.service import Service

    settings = Settings(model_store=store, sessions_per_model=1, reload_poll_s=0.05)
    service = Service(settings, Metrics())

    async def scenario() -> tuple[str, int]:
        await service.start()
        key = text_key("product-embedder", "1", "earbuds")
        service.cache.put(key, CachedEmbedding(np.ones(4, dtype=np.float32), False))
        poller = asyncio.create_task(service.poll_store())
        copy_version(store, "product-embedder", "1", "2")
        end = time.monotonic() + 30
        while service.registry.get("product-embedder").version != "2" and time.monotonic() < end:
            await asyncio.sleep(0.05)
        poller.cancel()
        version = service.registry.get("product-embedder").version
        await service.registry.close(10)
        return version, len(service.cache)

    version, cached = asyncio.run(scenario())
    assert version == "2"
    assert cached == 0
