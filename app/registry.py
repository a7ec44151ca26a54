"""Which version of each model is served, and version rollout inside a running server.

A version is loaded (sha256-verified, sessions created, warmed up) in a worker thread beside the one
being served, then swapped in with one dict assignment on the event loop; the old engine finishes its
queue before its sessions are dropped. A version that fails is recorded (shown in /v1/models, counted
in `inference_model_load_failures_total`) and the previous one keeps serving. Knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.engine import EngineConfig, ModelEngine
from app.errors import ModelLoadError, ModelNotFound
from app.metrics import Metrics
from app.runtime import CUDA, RuntimeOptions, load_runtimes
from app.settings import Settings, sessions_for
from app.store import Manifest, ModelStore

log = logging.getLogger("app.registry")

PROVIDER_LABEL = {CUDA: "cuda"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ServedModel:
    manifest: Manifest
    engine: ModelEngine
    provider: str
    max_length: int
    sessions: int
    loaded_at: str = field(default_factory=_now)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def kind(self) -> str:
        return self.manifest.model_kind


@dataclass(frozen=True)
class LoadFailure:
    name: str
    version: str
    reason: str
    message: str
    at: str = field(default_factory=_now)


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        batching=settings.batching,
        queue_capacity=settings.queue_capacity,
        max_batch_size=settings.max_batch_size,
        sub_batch_size=settings.sub_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        max_wait_s=settings.max_wait_ms / 1000.0,
        retry_after_s=settings.retry_after_s,
    )


class ModelRegistry:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        provider: str,
        on_retire: Callable[[str, str], object] | None = None,
    ) -> None:
        self.settings = settings
        self._on_retire = on_retire
        self.metrics = metrics
        self.provider = provider
        self.store = ModelStore(settings.model_store)
        self._served: dict[str, ServedModel] = {}
        self.failures: dict[tuple[str, str], LoadFailure] = {}
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    # --- lookups (event loop) -----------------------------------------------------------------------
    def get(self, name: str, version: str | None = None) -> ServedModel:
        served = self._served.get(name)
        if served is None:
            known = ", ".join(sorted(self._served)) or "none"
            raise ModelNotFound(f"model {name!r} is not served (served: {known})")
        if version is not None and version != served.version:
            raise ModelNotFound(
                f"model {name!r} version {version!r} is not served (serving {served.version})"
            )
        return served

    def served(self) -> list[ServedModel]:
        return [self._served[n] for n in sorted(self._served)]

    def is_served(self, name: str) -> bool:
        return name in self._served

    # --- loading ------------------------------------------------------------------------------------
    def _load_blocking(self, name: str, version: str) -> ServedModel:
        settings = self.settings
        verified = self.store.load_verified(name, version)  # sha256 first: no session before it
        options = RuntimeOptions(
            provider=self.provider,
            threads=settings.threads_per_session,
            allow_spinning=settings.ort_allow_spinning,
            max_sequence_length=settings.max_sequence_length,
        )
        runtimes = load_runtimes(verified, options, sessions_for(settings, self.provider == CUDA))
        max_length = runtimes[0].max_length
        if settings.max_batch_tokens < max_length:
            raise ModelLoadError(
                f"{name}/{version}: its max sequence length ({max_length}) is above "
                f"INFERENCE_MAX_BATCH_TOKENS ({settings.max_batch_tokens}), so one long text could never "
                f"run: set INFERENCE_MAX_BATCH_TOKENS >= {max_length} or cap INFERENCE_MAX_SEQUENCE_LENGTH",
                "settings",
            )
        if settings.warmup:
            for runtime in runtimes:
                runtime.warmup(settings.sub_batch_size)
        engine = ModelEngine(name, version, runtimes, engine_config(settings), self.metrics)
        return ServedModel(verified.manifest, engine, self.provider, max_length, len(runtimes))

    async def _try_load(self, name: str, version: str) -> ServedModel | None:
        try:
            served = await asyncio.to_thread(self._load_blocking, name, version)
        except ModelLoadError as exc:
            self._record_failure(name, version, exc.reason, exc.message)
            return None
        except Exception as exc:  # anything else onnxruntime or tokenizers may throw
            self._record_failure(
                name, version, "load_error", f"{name}/{version}: {type(exc).__name__}: {exc}"
            )
            return None
        self.failures.pop((name, version), None)
        return served

    def _record_failure(self, name: str, version: str, reason: str, message: str) -> None:
        log.error("refused model version %s/%s (%s): %s", name, version, reason, message)
        self.failures[(name, version)] = LoadFailure(name, version, reason, message)
        self.metrics.load_failures.labels(name=name, version=version, reason=reason).inc()

    def _swap(self, new: ServedModel) -> None:
        old = self._served.get(new.name)
        new.engine.start()
        self._served[new.name] = new
        m = new.manifest
        self.metrics.model_info.labels(
            name=m.name,
            version=m.version,
            precision=m.precision,
            provider=PROVIDER_LABEL.get(new.provider, "cpu"),
            kind=m.model_kind,
        ).set(1)
        log.info("serving %s version %s (%s, %s)", m.name, m.version, m.model_kind, m.precision)
        if old is not None:
            self._forget_info(old)
            if self._on_retire is not None:
                self._on_retire(old.name, old.version)
            task = asyncio.get_running_loop().create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def _forget_info(self, old: ServedModel) -> None:
        m = old.manifest
        with contextlib.suppress(KeyError):
            self.metrics.model_info.remove(
                m.name, m.version, m.precision, PROVIDER_LABEL.get(old.provider, "cpu"), m.model_kind
            )

    async def _retire(self, old: ServedModel) -> None:
        """The old version finishes what it has queued, then its workers exit."""
        old.engine.close()
        await asyncio.to_thread(old.engine.join, self.settings.drain_timeout_s)
        log.info("retired %s version %s", old.name, old.version)

    async def refresh(self, retry_failed: bool = False) -> list[str]:
        """Load, for every model in the store, the best version not yet served; returns what changed."""
        changed: list[str] = []
        async with self._lock:
            for name in self.store.names():
                pinned = self.settings.pinned_versions.get(name)
                current = self._served.get(name)
                candidates = self.store.candidates(name, pinned)
                if pinned is not None and not candidates and (name, pinned) not in self.failures:
                    message = f"{name}/{pinned}: pinned by INFERENCE_PINNED_VERSIONS but not in the store"
                    self._record_failure(name, pinned, "missing", message)
                for version in candidates:
                    if current is not None and version == current.version:
                        break
                    if (name, version) in self.failures and not retry_failed:
                        continue
                    loaded = await self._try_load(name, version)
                    if loaded is not None:
                        self._swap(loaded)
                        changed.append(f"{name}/{version}")
                        break
        return changed

    async def close(self, timeout: float) -> None:
        """Stop every engine after its queue is empty (or `timeout` passes)."""
        engines = [s.engine for s in self._served.values()]
        for engine in engines:
            engine.close()
        await asyncio.gather(*(asyncio.to_thread(e.join, timeout) for e in engines), *self._retiring)
        for served in list(self._served.values()):
            self._forget_info(served)
        self._served.clear()

    def engines(self) -> list[ModelEngine]:
        return [s.engine for s in self._served.values()]
