from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from app.engine import EngineConfig, InferenceResult, ModelEngine
from app.errors import DeadlineExceeded, Draining, InferenceFailed, QueueFull
from app.logs import RequestIdFilter, request_id_var
from app.metrics import Metrics
from app.runtime import FloatArray, OnnxRuntime, RuntimeOptions, TextInput, Tokenized
from app.store import ModelStore

TEXTS = [
    "great",
    "the battery died after two days",
    "love it",
    " ".join(["the case broke after a week of use and the sound was not good"] * 3),
    "nice sound but too big for my ears",
    "ok",
]


@pytest.fixture(scope="module")
def sentiment_runtimes(tiny_store: Path) -> list[OnnxRuntime]:
    verified = ModelStore(tiny_store).load_verified("review-sentiment", "1")
    return [OnnxRuntime(verified, RuntimeOptions()) for _ in range(2)]


def make_engine(runtimes: list[OnnxRuntime], **config: object) -> tuple[ModelEngine, Metrics]:
    metrics = Metrics()
    engine = ModelEngine("review-sentiment", "1", runtimes, EngineConfig(**config), metrics)  # type: ignore[arg-type]
    return engine, metrics


def sample_sum(metrics: Metrics, name: str) -> float:
    return sum(s.value for m in metrics.registry.collect() for s in m.samples if s.name == name)


def later(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


def test_concurrent_requests_share_batches_and_come_back_in_order(
    sentiment_runtimes: list[OnnxRuntime],
) -> None:
    rt = sentiment_runtimes[0]
    expected = rt.run(rt.tokenize(TEXTS), range(len(TEXTS)))
    engine, metrics = make_engine(sentiment_runtimes, sub_batch_size=4, max_batch_size=16)

    async def scenario() -> list[np.ndarray]:
        # Queue everything before the workers start, so that batching is certain, not timing-dependent.
        jobs = [engine.submit([TEXTS[i % 6], TEXTS[(i + 3) % 6]], later()) for i in range(12)]
        engine.start()
        results = await asyncio.gather(*(j.future for j in jobs))
        return [r.outputs for r in results]

    outputs = asyncio.run(scenario())
    engine.close()
    assert engine.join(10)
    for i, out in enumerate(outputs):
        np.testing.assert_allclose(out, expected[[i % 6, (i + 3) % 6]], atol=2e-3)
    runs = sample_sum(metrics, "inference_batch_size_count")
    texts = sample_sum(metrics, "inference_batch_size_sum")
    assert texts == 24
    assert runs < 24  # several texts per run
    assert runs >= 24 / 4  # never more than sub_batch_size texts per run


def test_a_large_request_is_split_and_reassembled(sentiment_runtimes: list[OnnxRuntime]) -> None:
    rt = sentiment_runtimes[0]
    texts = [TEXTS[i % 6] + f" {i}" for i in range(50)]
    expected = rt.run(rt.tokenize(texts), range(50))
    engine, metrics = make_engine(sentiment_runtimes, sub_batch_size=4, max_batch_size=8)
    engine.start()

    async def scenario() -> np.ndarray:
        return (await engine.infer(texts, later())).outputs

    out = asyncio.run(scenario())
    engine.close()
    engine.join(10)
    np.testing.assert_allclose(out, expected, atol=2e-3)
    assert sample_sum(metrics, "inference_batch_size_count") >= 50 / 4


def test_queue_capacity_is_counted_in_texts(sentiment_runtimes: list[OnnxRuntime]) -> None:
    engine, _ = make_engine(sentiment_runtimes, queue_capacity=5, retry_after_s=3)

    async def scenario() -> None:
        engine.submit(["a", "b", "c"], later())  # workers not started: the queue only fills
        engine.submit(["d", "e"], later())
        with pytest.raises(QueueFull) as info:
            engine.submit(["f"], later())
        assert info.value.retry_after_s == 3
        assert engine.depth == 5
        assert engine.abort_queued(Draining("stop")) == 5

    asyncio.run(scenario())


def test_expired_and_cancelled_work_is_dropped_before_inference(
    sentiment_runtimes: list[OnnxRuntime],
) -> None:
    engine, metrics = make_engine(sentiment_runtimes)

    async def scenario() -> None:
        expired = engine.submit(["a", "b"], time.monotonic() - 1)
        cancelled = engine.submit(["c"], later())
        cancelled.cancel()
        engine.start()
        with pytest.raises(DeadlineExceeded):
            await expired.future
        live = await engine.infer(["d"], later())
        assert live.outputs.shape == (1, 2)

    asyncio.run(scenario())
    engine.close()
    engine.join(10)
    assert sample_sum(metrics, "inference_batch_size_sum") == 1  # only "d" reached the model


def test_waiting_past_the_deadline_gives_504_and_drops_the_work(
    sentiment_runtimes: list[OnnxRuntime],
) -> None:
    engine, metrics = make_engine(sentiment_runtimes)

    async def scenario() -> None:
        with pytest.raises(DeadlineExceeded):
            await engine.infer(["a"], time.monotonic() + 0.05)  # workers never started
        engine.start()
        await engine.infer(["b"], later())

    asyncio.run(scenario())
    engine.close()
    engine.join(10)
    assert sample_sum(metrics, "inference_batch_size_sum") == 1


def test_client_disconnect_drops_queued_work(sentiment_runtimes: list[OnnxRuntime]) -> None:
    from app.errors import ClientDisconnected

    engine, metrics = make_engine(sentiment_runtimes)

    async def scenario() -> None:
        gone: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        gone.set_result(None)
        with pytest.raises(ClientDisconnected):
            await engine.infer(["a", "b"], later(), gone)
        engine.start()
        await engine.infer(["c"], later())

    asyncio.run(scenario())
    engine.close()
    engine.join(10)
    assert sample_sum(metrics, "inference_batch_size_sum") == 1


def test_batching_off_runs_one_request_per_run(sentiment_runtimes: list[OnnxRuntime]) -> None:
    engine, metrics = make_engine(sentiment_runtimes, batching=False, max_batch_size=8)

    async def scenario() -> None:
        jobs = [engine.submit(["a", "b", "c"], later()) for _ in range(4)]
        engine.start()
        for job in jobs:
            await job.future

    asyncio.run(scenario())
    engine.close()
    engine.join(10)
    assert sample_sum(metrics, "inference_batch_size_count") == 4
    assert sample_sum(metrics, "inference_batch_size_sum") == 12


def test_plan_sorts_by_length_within_size_and_token_budgets(sentiment_runtimes: list[OnnxRuntime]) -> None:
    engine, _ = make_engine(sentiment_runtimes, sub_batch_size=3, max_batch_tokens=40)
    lengths = [10, 3, 12, 4, 11, 2, 5]
    batches = engine._plan(lengths)
    assert sorted(i for b in batches for i in b) == list(range(7))
    for batch in batches:
        assert len(batch) <= 3
        assert max(lengths[i] for i in batch) * len(batch) <= 40
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)


def test_closed_engine_finishes_its_queue_and_refuses_more(sentiment_runtimes: list[OnnxRuntime]) -> None:
    engine, _ = make_engine(sentiment_runtimes)

    async def scenario() -> None:
        job = engine.submit(TEXTS, later())
        engine.close()
        engine.start()
        result = await job.future
        assert result.outputs.shape == (len(TEXTS), 2)
        with pytest.raises(Draining):
            engine.submit(["late"], later())

    asyncio.run(scenario())
    assert engine.join(10)


class _DyingRuntime:
    """A runtime whose run() ends its thread (BaseException is not caught by the worker)."""

    def __init__(self, real: OnnxRuntime) -> None:
        self.manifest = real.manifest
        self.max_length = real.max_length
        self.provider = real.provider
        self._real = real

    def tokenize(self, inputs: object) -> object:
        return self._real.tokenize(inputs)  # type: ignore[arg-type]

    def run(self, tokens: object, indices: object) -> object:
        raise SystemExit("worker killed")

    def warmup(self, batch_size: int) -> None:
        pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_worker_shows_in_liveness(sentiment_runtimes: list[OnnxRuntime]) -> None:
    from app.engine import wait_for

    engine, _ = make_engine([_DyingRuntime(sentiment_runtimes[0])])  # type: ignore[list-item]

    async def scenario() -> None:
        engine.start()
        assert engine.alive
        job = engine.submit(["a"], later())
        with pytest.raises(DeadlineExceeded):
            await wait_for(job, time.monotonic() + 0.5)  # the dying worker never answers

    asyncio.run(scenario())
    engine._threads[0].join(5)
    assert not engine.alive
    engine.close()
    assert engine.alive  # a closed engine is a stopped one, not a dead one


def test_a_cancelled_waiter_drops_its_queued_texts(sentiment_runtimes: list[OnnxRuntime]) -> None:
    engine, metrics = make_engine(sentiment_runtimes)

    async def scenario() -> None:
        waiter = asyncio.ensure_future(engine.infer(["a", "b"], later()))  # workers not started yet
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        engine.start()
        await engine.infer(["c"], later())

    asyncio.run(scenario())
    engine.close()
    engine.join(10)
    assert sample_sum(metrics, "inference_batch_size_sum") == 1


def test_an_answer_before_the_deadline_leaves_no_timer_behind(sentiment_runtimes: list[OnnxRuntime]) -> None:
    engine, _ = make_engine(sentiment_runtimes)

    async def scenario() -> None:
        engine.start()
        gone: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        result = await engine.infer(["a"], later(), gone)
        assert result.outputs.shape == (1, 2)
        assert not gone.done()
        gone.set_result(None)  # the client leaves after its answer: nothing is settled twice
        await asyncio.sleep(0)

    asyncio.run(scenario())
    engine.close()
    engine.join(10)


class FaultyRuntime:
    """A real runtime whose tokenize or run raises when its input holds a marker text: the faults a bad
    input or a broken kernel would cause, injected so that the engine's isolation can be tested."""

    def __init__(self, inner: OnnxRuntime) -> None:
        self.inner = inner
        self.manifest = inner.manifest
        self.max_length = inner.max_length
        self.provider = inner.provider

    def tokenize(self, inputs: Sequence[TextInput]) -> Tokenized:
        if any("fails-to-tokenize" in str(text) for text in inputs):
            raise ValueError("the tokenizer refused a text")
        return self.inner.tokenize(inputs)

    def run(self, tokens: Tokenized, indices: Sequence[int]) -> FloatArray:
        if any(
            self.inner.tokenizer.decode(tokens.encodings[i].ids).startswith("fails to run") for i in indices
        ):
            raise RuntimeError("onnxruntime failed on a batch")
        return self.inner.run(tokens, indices)

    def warmup(self, batch_size: int) -> None:
        self.inner.warmup(batch_size)


def test_a_request_that_makes_the_model_fail_fails_alone(sentiment_runtimes: list[OnnxRuntime]) -> None:
    rt = sentiment_runtimes[0]
    expected = rt.run(rt.tokenize(TEXTS), range(len(TEXTS)))
    runtimes = [FaultyRuntime(r) for r in sentiment_runtimes]
    engine, _ = make_engine(runtimes, sub_batch_size=4, max_batch_size=32)  # type: ignore[arg-type]
    poisoned = {3: ["great", "fails to run here"], 7: ["fails-to-tokenize", "ok"], 8: ["fails to run, too"]}
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(RequestIdFilter())
    logging.getLogger("app.engine").addHandler(handler)

    async def scenario() -> list[object]:
        jobs = []
        for i in range(12):  # all queued before the workers start: the poisoned share windows with the rest
            token = request_id_var.set(f"req-{i}")
            jobs.append(engine.submit(poisoned.get(i, [TEXTS[i % 6], TEXTS[(i + 3) % 6]]), later()))
            request_id_var.reset(token)
        engine.start()
        return await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)

    try:
        results = asyncio.run(scenario())
    finally:
        logging.getLogger("app.engine").removeHandler(handler)
        engine.close()
        assert engine.join(10)
    for i, result in enumerate(results):
        if i in poisoned:
            assert isinstance(result, InferenceFailed), (i, result)
            assert "this request's texts" in result.message
        else:
            assert isinstance(result, InferenceResult), (i, result)
            np.testing.assert_allclose(result.outputs, expected[[i % 6, (i + 3) % 6]], atol=2e-3)
    failed_ids = sorted(getattr(r, "request_id", "-") for r in records if r.levelno >= logging.ERROR)
    assert failed_ids == ["req-3", "req-7", "req-8"]
    assert engine.alive
