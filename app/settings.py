"""The one settings object of the service.

Every field is also an environment variable `INFERENCE_<FIELD>`; each description says why the setting
exists. Nothing is read at import time: `get_settings()` builds the object, tests pass their own.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_TOKEN_CHARS = 16
# The schema's bound on every list in a request (texts, candidates, history): a body of a million items is
# refused after the first 1,025 instead of validating (and describing) each of them.
# INFERENCE_MAX_TEXTS_PER_REQUEST is the operator's tighter limit inside it.
MAX_LIST_ITEMS = 1024
EventKind = Literal["view", "cart", "purchase"]
DEFAULT_EVENT_WEIGHTS: dict[EventKind, float] = {"view": 1.0, "cart": 2.0, "purchase": 3.0}
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no whitespace: what a bearer header carries intact
_VERSION = re.compile(r"[1-9][0-9]{0,17}")


def parse_pins(value: object) -> dict[str, str]:
    """`"review-sentiment=2,product-embedder=1"` -> `{"review-sentiment": "2", "product-embedder": "1"}`."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if not isinstance(value, str):
        raise ValueError("expected 'name=version,...'")
    pins: dict[str, str] = {}
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, version = part.partition("=")
        name, version = name.strip(), version.strip()
        if not sep or not name or not _VERSION.fullmatch(version):
            raise ValueError(f"bad pin {part!r}: expected name=<positive integer version>")
        if name in pins:
            raise ValueError(f"model {name!r} is pinned twice")
        pins[name] = version
    return pins


def cpu_quota_cores() -> float:
    """CPU cores this process may use: the cgroup quota when one is set, else the CPUs it may run on."""
    affinity = float(len(os.sched_getaffinity(0)))
    quota: float | None = None
    try:  # cgroup v2
        raw = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if raw and raw[0] != "max":
            quota = int(raw[0]) / int(raw[1])
    except (OSError, ValueError, IndexError):
        try:  # cgroup v1
            q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if q > 0 and p > 0:
                quota = q / p
        except (OSError, ValueError):
            quota = None
    return min(affinity, quota) if quota else affinity


def default_sessions() -> int:
    return max(1, math.floor(cpu_quota_cores() + 0.5))


class Settings(BaseSettings):
    """Service configuration; refuses contradictory combinations at construction."""

    model_config = SettingsConfigDict(env_prefix="INFERENCE_", extra="forbid", validate_default=True)

    # --- models -------------------------------------------------------------------------------------
    model_store: Path = Field(
        default=Path("model_store"),
        description="Folder holding <name>/<version>/ artifacts published by conversion/; the only place "
        "models are loaded from (no network at run time).",
    )
    provider: Literal["cpu", "cuda"] = Field(
        default="cpu",
        description="onnxruntime execution provider. `cuda` falls back to cpu with a warning when the CUDA "
        "provider is not available, so one image runs everywhere.",
    )
    pinned_versions: Annotated[dict[str, str], NoDecode, BeforeValidator(parse_pins)] = Field(
        default_factory=dict,
        description="`name=version,...`: serve exactly these versions instead of the newest; lets a rollout "
        "be held back or rolled back without touching the store.",
    )
    sentiment_model: str = Field(
        default="review-sentiment", description="Model used by /v1/sentiment when the request names none."
    )
    ranking_model: str = Field(
        default="product-embedder",
        description="Model used by /v1/rank when the request names none (a request may name a cross-encoder"
        " instead).",
    )
    rank_reranker: str = Field(
        default="product-reranker",
        description="Cross-encoder of /v1/rank's second stage, and the model of /v1/rerank and /v2/rerank "
        "when the request names none (when it is not served, those fall back to the ranking model).",
    )
    # 10: a 100-candidate search page at about issue 13's targets on 2 cores (p50 24-26 ms alone, p99
    # 230-260 ms at concurrency 8; 20: p99 388 ms), with most of the quality gain (bench.rank_stages,
    # docs/performance.md).
    rank_rerank_top_n: int = Field(
        default=10,
        ge=0,
        description="How many of the bi-encoder's best candidates /v1/rank re-scores with the reranker when "
        "the request does not say (its `rerank_top_n`); 0: the bi-encoder alone.",
    )
    rank_rerank_max_top_n: int = Field(
        default=100,
        ge=0,
        description="The largest `rerank_top_n` a /v1/rank request may ask for (the cross-encoder reads each "
        "pair: its cost grows with N).",
    )
    recommend_model: str = Field(
        default="product-recommender",
        description="Bi-encoder used by /v1/recommend when the request names none.",
    )
    recommend_event_weights: dict[EventKind, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description="Weight of a history item by what the user did with it (a JSON object), multiplied by "
        "the request's own weight; an item without an event, or of a kind not named here, weighs 1. Not "
        "learned: no training set has events.",
    )
    max_sequence_length: int | None = Field(
        default=None,
        ge=8,
        description="Upper bound on tokens per text (special tokens included), below the manifest's own "
        "limit if set: cost grows with length; longer texts are truncated and reported `truncated: true`.",
    )

    # --- request limits -----------------------------------------------------------------------------
    max_texts_per_request: int = Field(
        default=256,
        ge=1,
        le=MAX_LIST_ITEMS,
        description="Most texts (or candidates / history items) in one request, so that one caller cannot "
        "fill the queue alone (a rank page sends up to ~200 candidates).",
    )
    max_chars_per_text: int = Field(
        default=4096,
        ge=1,
        description="Most characters per text: tokenizing megabytes of text costs CPU even though the model "
        "only reads the first max-sequence-length tokens.",
    )
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted (413 above it), checked before the JSON is parsed.",
    )
    request_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Deadline of a request from arrival: past it the answer is 504 and its queued texts are "
        "dropped before inference, because a storefront page has already given up by then.",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token required on /v1/* and /v2/* when set (health and metrics stay open); "
        "checked before the body is read, in constant time. "
        f"At least {MIN_TOKEN_CHARS} printable ASCII characters, no whitespace.",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the admin operation POST /v1/models/reload (a reload loads and swaps "
        "models, so it is not for every API caller); unset, reload answers 403 and new versions roll in "
        "only through INFERENCE_RELOAD_POLL_S or a restart. Same format as api_token, and different from it.",
    )
    body_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A request body must arrive within this long after its headers, or the answer is 408 and "
        "the connection is closed: a storefront backend uploads its largest body in milliseconds, while a "
        "client trickling its body holds a connection and a buffer for nothing.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A connection must complete each request's headers within this long of opening (or of "
        "starting the request), or it is closed: slowloris clients would otherwise hold connections, and "
        "with them the connection cap, forever.",
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        description="Open connections (or requests in progress) before new requests are answered 503 by "
        "the server: bounds memory and file descriptors under a connection flood; far above what the "
        "batching engine can use (its queue holds queue_capacity texts).",
    )

    # --- batching engine ----------------------------------------------------------------------------
    batching: bool = Field(
        default=True,
        description="Share model runs between concurrent requests. Off: each request runs alone (in chunks "
        "of max_batch_size texts), for comparison in benchmarks.",
    )
    queue_capacity: int = Field(
        default=1024,
        ge=1,
        description="Texts waiting per model before new requests get 429 + Retry-After: a short queue sheds "
        "overload at once instead of turning it into timeouts.",
    )
    max_batch_size: int = Field(
        default=32,
        ge=1,
        description="Most texts one worker takes from the queue at a time (its batch window), which it sorts "
        "by length and runs as sub-batches.",
    )
    sub_batch_size: int = Field(
        default=4,
        ge=1,
        description="Most texts per onnxruntime run inside a batch window: padding costs more than small "
        "batches save on CPU, so a window runs as several length-sorted small batches.",
    )
    max_batch_tokens: int = Field(
        default=2048,
        ge=8,
        description="Most padded tokens (texts x longest text) in one onnxruntime run; bounds the memory and "
        "latency of a run. Must hold at least one text of max sequence length.",
    )
    max_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description="How long a batch window may wait for more texts when it opened under load; a request "
        "that finds nothing else queued is sent at once, so this adds nothing at low concurrency.",
    )
    sessions_per_model: int | None = Field(
        default=None,
        ge=1,
        description="onnxruntime sessions per model, each in its own worker thread pulling from the model's "
        "queue. Unset: one per core of the cgroup CPU quota on cpu (one single-threaded session per core "
        "was measured ~20% faster than one session with two threads), one on cuda (the GPU runs one "
        "batch at a time anyway).",
    )
    threads_per_session: int = Field(
        default=1, ge=1, description="intra-op threads of each onnxruntime session (see sessions_per_model)."
    )
    ort_allow_spinning: bool = Field(
        default=True,
        description="Let onnxruntime's intra-op threads spin while waiting: lower latency with several "
        "threads per session, wasted CPU on a shared machine.",
    )
    retry_after_s: int = Field(
        default=1, ge=1, description="Retry-After seconds sent with 429 when the queue is full."
    )

    # --- embedding cache ----------------------------------------------------------------------------
    cache_size: int = Field(
        default=20_000,
        ge=0,
        description="Embeddings kept in the LRU cache shared by /v1/rank and /v1/recommend (0 turns it off): "
        "a storefront scores the same product texts again and again. ~1.5 KB each at hidden size 384.",
    )

    # --- lifecycle ----------------------------------------------------------------------------------
    drain_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="On SIGTERM: how long queued and in-flight requests may take to finish before the "
        "rest are refused and the process exits; keep it below the pod's termination grace period.",
    )
    shutdown_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="After the drain, how long the server waits for connections still open (a stalled "
        "upload) before cancelling them, so that shutdown always ends and the models are released: the "
        "process exits within drain_timeout_s + shutdown_timeout_s + ~1 s of SIGTERM, which must stay "
        "below the pod's termination grace period (k8s/base/deployment.yaml).",
    )
    reload_poll_s: float = Field(
        default=0.0,
        ge=0,
        description="Seconds between scans of the store for new versions (0: only on POST "
        "/v1/models/reload). "
        "A new version is verified and warmed beside the old one, then swapped in.",
    )
    warmup: bool = Field(
        default=True,
        description="Run each model over its sequence-length buckets before reporting ready, so that the "
        "first real requests do not pay for allocations.",
    )

    # --- server (python -m app) ----------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address `python -m app` listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `python -m app` listens on.")

    # --- logging ------------------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info",
        description="Level of the service's own logs. Every refused or failed request (status >= 400) is "
        "logged at warning with its request id; `debug` adds one access line per successful /v1 request "
        "(off at `info`: a log write per request costs CPU, and inference_request_duration_seconds counts "
        "every request by endpoint and status).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text`: one readable line per record. `json`: one JSON object per line (time, level, "
        "logger, request_id, trace_id from a W3C traceparent, message, and for access records method, "
        "path, status, duration_ms, model, version), for log pipelines that index fields.",
    )
    log_payloads: bool = Field(
        default=False,
        description="Log request texts (reviews, queries, user history). Off by default: they are "
        "customer data.",
    )

    @model_validator(mode="after")
    def _refuse_contradictions(self) -> Settings:
        problems: list[str] = []
        if self.sub_batch_size > self.max_batch_size:
            problems.append(
                f"sub_batch_size ({self.sub_batch_size}) > max_batch_size ({self.max_batch_size})"
            )
        if self.max_sequence_length is not None and self.max_batch_tokens < self.max_sequence_length:
            problems.append(
                f"max_batch_tokens ({self.max_batch_tokens}) < max_sequence_length "
                f"({self.max_sequence_length}):"
                " a single long text could never run"
            )
        if self.rank_rerank_top_n > self.rank_rerank_max_top_n:
            problems.append(
                f"rank_rerank_top_n ({self.rank_rerank_top_n}) > rank_rerank_max_top_n "
                f"({self.rank_rerank_max_top_n})"
            )
        for name in ("api_token", "admin_token"):
            secret: SecretStr | None = getattr(self, name)
            if secret is not None and not _valid_token(secret.get_secret_value()):
                problems.append(
                    f"{name} must be at least {MIN_TOKEN_CHARS} printable ASCII characters without whitespace"
                )
        if (
            self.api_token is not None
            and self.admin_token is not None
            and self.api_token.get_secret_value() == self.admin_token.get_secret_value()
        ):
            problems.append("admin_token must differ from api_token")
        if problems:
            raise ValueError("contradictory settings: " + "; ".join(problems))
        return self


def _valid_token(token: str) -> bool:
    return len(token) >= MIN_TOKEN_CHARS and _TOKEN.fullmatch(token) is not None


def sessions_for(settings: Settings, on_gpu: bool) -> int:
    """Sessions per model: the setting, else one per CPU-quota core (cpu) or one (cuda)."""
    if settings.sessions_per_model is not None:
        return settings.sessions_per_model
    return 1 if on_gpu else default_sessions()


def get_settings() -> Settings:
    """Settings from the environment (INFERENCE_*)."""
    return Settings()
