"""The micro-batcher of one model version: a bounded queue counted in texts, fed from the event loop and
drained by one worker thread per onnxruntime session.

A worker takes a batch window from the queue (at most `max_batch_size` texts, an even share of what is
queued when several sessions are idle, sent at once when nothing else is queued), tokenizes it in one
call, sorts it by length and runs it as small sub-batches padded per sub-batch. A request's texts may
span several windows and sessions; results are reassembled in input order. Texts of requests whose
deadline passed or whose client went away are dropped before inference. Knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.errors import (
    ClientDisconnected,
    DeadlineExceeded,
    Draining,
    InferenceFailed,
    QueueFull,
    ServiceError,
)
from app.logs import request_id_var
from app.metrics import Metrics
from app.runtime import FloatArray, Runtime, TextInput, Tokenized

log = logging.getLogger("app.engine")


@dataclass(frozen=True)
class EngineConfig:
    batching: bool = True
    queue_capacity: int = 1024
    max_batch_size: int = 32
    sub_batch_size: int = 4
    max_batch_tokens: int = 2048
    max_wait_s: float = 0.002
    retry_after_s: int = 1


@dataclass(frozen=True)
class InferenceResult:
    """Outputs of one request, in input order, and where its time went."""

    outputs: FloatArray
    truncated: list[bool]
    tokens: list[int]  # per text: tokens the model read (special tokens included, after truncation)
    queue_s: float
    tokenize_s: float
    inference_s: float


class Job:
    """One request's texts in flight. Mutated by worker threads under `lock`; settled on the event loop."""

    __slots__ = (
        "_loop",
        "deadline",
        "done",
        "enqueued_at",
        "future",
        "inference_s",
        "lock",
        "n",
        "outputs",
        "queue_s",
        "remaining",
        "request_id",
        "tokenize_s",
        "tokens",
        "truncated",
    )

    def __init__(self, n: int, deadline: float, loop: asyncio.AbstractEventLoop) -> None:
        self.n = n
        self.deadline = deadline
        self._loop = loop
        self.future: asyncio.Future[InferenceResult] = loop.create_future()
        self.lock = threading.Lock()
        self.done = False
        self.remaining = n
        self.outputs: FloatArray | None = None
        self.truncated = [False] * n
        self.tokens = [0] * n
        self.enqueued_at = time.monotonic()
        self.queue_s = 0.0
        self.tokenize_s = 0.0
        self.inference_s = 0.0
        self.request_id = request_id_var.get()

    def cancel(self) -> None:
        """Stop caring about this job: its queued texts are skipped by the workers."""
        with self.lock:
            self.done = True

    def fail(self, error: ServiceError) -> None:
        with self.lock:
            if self.done:
                return
            self.done = True
        self._settle(None, error)

    def _result(self) -> InferenceResult:
        outputs = self.outputs if self.outputs is not None else np.zeros((0, 0), dtype=np.float32)
        return InferenceResult(
            outputs, self.truncated, self.tokens, self.queue_s, self.tokenize_s, self.inference_s
        )

    def _settle(self, result: InferenceResult | None, error: BaseException | None) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                assert result is not None
                self.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(settle)


class _Item:
    __slots__ = ("delivered", "index", "job", "text")

    def __init__(self, job: Job, index: int, text: TextInput) -> None:
        self.job = job
        self.index = index
        self.text = text
        self.delivered = False


class ModelEngine:
    """Queue + workers of one model version (`runtimes`: one per worker thread)."""

    def __init__(
        self, name: str, version: str, runtimes: Sequence[Runtime], config: EngineConfig, metrics: Metrics
    ) -> None:
        if not runtimes:
            raise ValueError("an engine needs at least one runtime")
        self.name = name
        self.version = version
        self.config = config
        self.metrics = metrics
        self._runtimes = list(runtimes)
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._busy = 0
        labels = {"model": name, "version": version}
        self._m_queue_wait = metrics.queue_wait.labels(**labels)
        self._m_tokenize = metrics.tokenize.labels(**labels)
        self._m_run = metrics.model_run.labels(**labels)
        self._m_batch = metrics.batch_size.labels(**labels)
        self._m_tokens = metrics.batch_tokens.labels(**labels)
        self._m_padding = metrics.padding_ratio.labels(**labels)
        self._m_depth = metrics.queue_depth.labels(model=name)
        metrics.queue_capacity.labels(model=name).set(config.queue_capacity)

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        for i, runtime in enumerate(self._runtimes):
            thread = threading.Thread(
                target=self._worker,
                args=(runtime,),
                name=f"engine-{self.name}-{self.version}-{i}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Accept nothing more; workers finish what is queued, then exit."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort_queued(self, error: ServiceError) -> int:
        """Fail every queued (not yet running) job with `error`; returns how many texts were dropped."""
        with self._cond:
            items = list(self._queue)
            self._queue.clear()
            self._m_depth.set(0)
        for item in items:
            item.job.fail(error)
        return len(items)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the workers to exit (blocking); True when all did."""
        end = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def alive(self) -> bool:
        """False once a worker thread died while the engine should be running (the liveness probe's cue)."""
        return self._closed or all(t.is_alive() for t in self._threads)

    @property
    def idle(self) -> bool:
        return not self._queue and self._busy == 0

    # --- the event-loop side ------------------------------------------------------------------------
    def submit(self, inputs: Sequence[TextInput], deadline: float) -> Job:
        """Queue a request's texts (all or none). Call from the event loop; raises QueueFull or Draining."""
        job = Job(len(inputs), deadline, asyncio.get_running_loop())
        if not inputs:
            job.done = True
            job.future.set_result(job._result())
            return job
        cfg = self.config
        with self._cond:
            if self._closed:
                raise Draining(f"model {self.name} version {self.version} is shutting down")
            depth = len(self._queue)
            if depth + len(inputs) > cfg.queue_capacity:
                raise QueueFull(
                    f"model {self.name} queue is full ({depth} of {cfg.queue_capacity} texts queued, "
                    f"request has {len(inputs)})",
                    cfg.retry_after_s,
                )
            self._queue.extend(_Item(job, i, text) for i, text in enumerate(inputs))
            self._m_depth.set(len(self._queue))
            self._cond.notify(min(len(inputs), len(self._runtimes)))
        return job

    async def infer(
        self, inputs: Sequence[TextInput], deadline: float, disconnected: asyncio.Future[object] | None = None
    ) -> InferenceResult:
        """Submit and wait for the outputs; DeadlineExceeded past `deadline`, ClientDisconnected when
        `disconnected` completes first (the job's queued texts are then dropped)."""
        job = self.submit(inputs, deadline)
        return await wait_for(job, deadline, disconnected)

    # --- the worker side ----------------------------------------------------------------------------
    def _take(self) -> list[_Item] | None:
        cfg = self.config
        q = self._queue
        with self._cond:
            while not q:
                if self._closed:
                    return None
                self._cond.wait()
            if not cfg.batching:
                first = q.popleft()
                window = [first]
                while q and q[0].job is first.job and len(window) < cfg.max_batch_size:
                    window.append(q.popleft())
            else:
                under_load = len(q) > 1 or self._busy > 0
                idle_sessions = max(1, len(self._runtimes) - self._busy)
                limit = min(cfg.max_batch_size, max(cfg.sub_batch_size, math.ceil(len(q) / idle_sessions)))
                window = [q.popleft() for _ in range(min(limit, len(q)))]
                if under_load and cfg.max_wait_s > 0 and len(window) < cfg.sub_batch_size:
                    end = time.monotonic() + cfg.max_wait_s
                    while len(window) < cfg.sub_batch_size:
                        if not q:
                            remaining = end - time.monotonic()
                            if remaining <= 0 or self._closed:
                                break
                            self._cond.wait(remaining)
                            continue
                        window.append(q.popleft())
            self._busy += 1
            self._m_depth.set(len(q))
            return window

    def _worker(self, runtime: Runtime) -> None:
        while True:
            window = self._take()
            if window is None:
                return
            try:
                self._process(runtime, window)
            except Exception:
                self._isolate(runtime, window)
            finally:
                with self._cond:
                    self._busy -= 1

    def _isolate(self, runtime: Runtime, window: list[_Item]) -> None:
        """A window failed: run what it left undelivered again, one request at a time, so that only the
        request(s) whose texts make the model fail get an error; the others get their normal answers."""
        by_job: dict[int, list[_Item]] = {}
        for item in window:
            if not item.delivered and not item.job.done:
                by_job.setdefault(id(item.job), []).append(item)
        for items in by_job.values():
            job = items[0].job
            try:
                self._process(runtime, items)
            except Exception as exc:
                token = request_id_var.set(job.request_id)
                try:
                    log.exception("model %s/%s: inference failed for this request", self.name, self.version)
                finally:
                    request_id_var.reset(token)
                job.fail(
                    InferenceFailed(
                        f"model {self.name} version {self.version} failed on this request's texts: "
                        f"{type(exc).__name__}"
                    )
                )

    def _live(self, items: list[_Item], now: float) -> list[_Item]:
        live = []
        for item in items:
            job = item.job
            if job.done:
                continue
            if now > job.deadline:
                job.fail(DeadlineExceeded(f"deadline passed while queued for model {self.name}"))
                continue
            live.append(item)
        return live

    def _process(self, runtime: Runtime, window: list[_Item]) -> None:
        now = time.monotonic()
        live = self._live(window, now)
        if not live:
            return
        for item in live:
            waited = now - item.job.enqueued_at
            self._m_queue_wait.observe(waited)
            if waited > item.job.queue_s:
                item.job.queue_s = waited
        t0 = time.perf_counter()
        tokens = runtime.tokenize([item.text for item in live])
        tokenize_s = time.perf_counter() - t0
        self._m_tokenize.observe(tokenize_s)
        for job in {id(item.job): item.job for item in live}.values():
            with job.lock:
                job.tokenize_s += tokenize_s
        for batch in self._plan(tokens.lengths):
            self._run_batch(runtime, tokens, live, batch)

    def _plan(self, lengths: list[int]) -> list[list[int]]:
        """Split a tokenized window into runs: length-sorted sub-batches under the size and token budgets."""
        cfg = self.config
        if cfg.batching:
            order = sorted(range(len(lengths)), key=lengths.__getitem__)
            size = cfg.sub_batch_size
        else:
            order = list(range(len(lengths)))
            size = cfg.max_batch_size
        batches: list[list[int]] = []
        current: list[int] = []
        width = 0
        for i in order:
            new_width = max(width, lengths[i])
            if current and (len(current) >= size or new_width * (len(current) + 1) > cfg.max_batch_tokens):
                batches.append(current)
                current, new_width = [], lengths[i]
            current.append(i)
            width = new_width
        if current:
            batches.append(current)
        return batches

    def _run_batch(self, runtime: Runtime, tokens: Tokenized, live: list[_Item], batch: list[int]) -> None:
        now = time.monotonic()
        batch = [i for i in batch if not live[i].job.done]
        for i in batch:
            job = live[i].job
            if now > job.deadline:
                job.fail(DeadlineExceeded(f"deadline passed while queued for model {self.name}"))
        batch = [i for i in batch if not live[i].job.done]
        if not batch:
            return
        t0 = time.perf_counter()
        outputs = runtime.run(tokens, batch)
        run_s = time.perf_counter() - t0
        lengths = [tokens.lengths[i] for i in batch]
        padded = max(lengths) * len(batch)
        self._m_run.observe(run_s)
        self._m_batch.observe(len(batch))
        self._m_tokens.observe(padded)
        self._m_padding.observe(1.0 - sum(lengths) / padded)
        finished: dict[int, Job] = {}
        touched: dict[int, Job] = {}
        for row, i in enumerate(batch):
            item = live[i]
            job = item.job
            with job.lock:
                item.delivered = True
                if job.done:
                    continue
                if job.outputs is None:
                    job.outputs = np.empty((job.n, outputs.shape[1]), dtype=np.float32)
                job.outputs[item.index] = outputs[row]
                job.truncated[item.index] = tokens.truncated[i]
                job.tokens[item.index] = tokens.lengths[i]
                job.remaining -= 1
                if id(job) not in touched:
                    touched[id(job)] = job
                    job.inference_s += run_s
                if job.remaining == 0:
                    job.done = True
                    finished[id(job)] = job
        if finished:
            _settle_all([(job, job._result()) for job in finished.values()])


def _settle_all(results: list[tuple[Job, InferenceResult]]) -> None:
    """Hand finished jobs to their event loop in one wake-up per loop (in a server: one)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, InferenceResult]]] = {}
    for job, result in results:
        by_loop.setdefault(job._loop, []).append((job, result))
    for loop, batch in by_loop.items():

        def settle(batch: list[tuple[Job, InferenceResult]] = batch) -> None:
            for job, result in batch:
                if not job.future.done():
                    job.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(settle)


async def wait_for(
    job: Job, deadline: float, disconnected: asyncio.Future[object] | None = None
) -> InferenceResult:
    """Wait for a job until its deadline, or until `disconnected` (owned by the caller) completes.

    One future per request: a timer and the disconnect callback settle the job's own future with the
    error, so the wait is a plain `await` (no `asyncio.wait` and its per-call task bookkeeping)."""
    future = job.future
    if future.done():
        return future.result()

    def give_up(error: ServiceError) -> None:
        if not future.done():
            job.cancel()
            future.set_exception(error)

    def expired() -> None:
        give_up(DeadlineExceeded("the request deadline passed before inference finished"))

    def left(_: asyncio.Future[object]) -> None:
        give_up(ClientDisconnected("the client disconnected before its answer was ready"))

    timer = job._loop.call_later(max(0.0, deadline - time.monotonic()), expired)
    if disconnected is not None:
        disconnected.add_done_callback(left)
    try:
        return await future
    except asyncio.CancelledError:
        job.cancel()  # the caller went away (its task was cancelled): drop its queued texts
        raise
    finally:
        timer.cancel()
        if disconnected is not None:
            disconnected.remove_done_callback(left)
