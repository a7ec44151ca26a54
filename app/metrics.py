"""Every Prometheus metric of the service, on a registry owned by one app instance.

The names below are a contract with the dashboards, alert rules and benchmarks: do not rename them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "REJECTION_REASONS", "Metrics"]

REJECTION_REASONS = (
    "queue_full",
    "deadline",
    "draining",
    "not_ready",
    "body_too_large",
    "body_timeout",
    "bad_request",
    "method_not_allowed",
    "unsupported_media_type",
    "invalid_request",
    "unauthorized",
    "forbidden",
    "client_disconnected",
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
_TOKEN_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
_RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class Metrics:
    """All metrics of one app instance (several apps in one test process each get their own registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_duration = Histogram(
            "inference_request_duration_seconds",
            "Time from request arrival to response, by endpoint, model, version and status code.",
            ["endpoint", "model", "version", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "inference_queue_wait_seconds",
            "Time a text waited in its model's queue before a worker took it.",
            ["model", "version"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.tokenize = Histogram(
            "inference_tokenize_seconds",
            "Tokenization time of one batch window.",
            ["model", "version"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.model_run = Histogram(
            "inference_model_run_seconds",
            "onnxruntime session.run time of one batch, post-processing included.",
            ["model", "version"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "inference_batch_size",
            "Texts per onnxruntime run.",
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "inference_batch_tokens",
            "Padded tokens (texts x longest) per onnxruntime run.",
            ["model", "version"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.padding_ratio = Histogram(
            "inference_padding_ratio",
            "Fraction of the tokens of a run that are padding.",
            ["model", "version"],
            buckets=_RATIO_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "inference_queue_depth", "Texts waiting in a model's queue.", ["model"], registry=r
        )
        self.queue_capacity = Gauge(
            "inference_queue_capacity",
            "Texts a model's queue holds before new requests get 429 (INFERENCE_QUEUE_CAPACITY).",
            ["model"],
            registry=r,
        )
        self.in_flight = Gauge(
            "inference_in_flight_requests", "Requests being handled, by endpoint.", ["endpoint"], registry=r
        )
        self.rejected = Counter(
            "inference_rejected_requests_total",
            "Requests refused before or instead of inference, by reason: "
            + ", ".join(REJECTION_REASONS)
            + ".",
            ["endpoint", "reason"],
            registry=r,
        )
        self.errors = Counter(
            "inference_errors_total",
            "Errors answered with a status >= 500, by error type.",
            ["type"],
            registry=r,
        )
        self.cache_hits = Counter(
            "inference_embedding_cache_hits_total", "Embeddings served from the cache.", ["model"], registry=r
        )
        self.cache_misses = Counter(
            "inference_embedding_cache_misses_total",
            "Embeddings that had to be computed.",
            ["model"],
            registry=r,
        )
        self.load_failures = Counter(
            "inference_model_load_failures_total",
            "Model versions refused at load (checksum, manifest, onnxruntime, warm-up), by reason.",
            ["name", "version", "reason"],
            registry=r,
        )
        self.model_info = Gauge(
            "inference_model_info",
            "1 for every model version being served.",
            ["name", "version", "precision", "provider", "kind"],
            registry=r,
        )
        self.ready = Gauge("inference_ready", "1 when the service is ready for traffic, else 0.", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
