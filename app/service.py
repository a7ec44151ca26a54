"""What the endpoints do, without HTTP: limits, model choice, the embedding cache, scoring, readiness.

Routers validate the JSON and shape responses; everything in between lives here, so it can be driven
from tests and benchmarks without a web server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.cache import CachedEmbedding, EmbeddingCache, text_key
from app.engine import InferenceResult
from app.errors import Draining, InvalidRequest, NotReady
from app.metrics import Metrics
from app.registry import ModelRegistry, ServedModel
from app.runtime import FloatArray, TextInput, resolve_provider
from app.settings import EventKind, Settings
from app.user_vector import recency_weights

log = logging.getLogger("app.service")


@dataclass
class Timings:
    queue_s: float = 0.0
    tokenize_s: float = 0.0
    inference_s: float = 0.0

    def add(self, result: InferenceResult) -> None:
        self.queue_s = max(self.queue_s, result.queue_s)
        self.tokenize_s += result.tokenize_s
        self.inference_s += result.inference_s


@dataclass(frozen=True)
class Classified:
    model: ServedModel
    probabilities: FloatArray  # [texts, labels]
    truncated: list[bool]
    timings: Timings


@dataclass(frozen=True)
class Scored:
    """Candidates in best-first order: `order` indexes the request's candidates."""

    model: ServedModel
    order: list[int]
    scores: FloatArray  # per candidate, in request order
    truncated: list[bool]  # per candidate, in request order
    timings: Timings


@dataclass(frozen=True)
class Stage:
    """One stage of a ranking: the model that scored, and how many candidates it scored."""

    model: ServedModel
    candidates: int


@dataclass(frozen=True)
class Ranked(Scored):
    """A /v1/rank answer: `stages` in the order they ran. After a rerank the first `stages[-1].candidates`
    of `order` carry the cross-encoder's scores, the rest the first stage's (scores compare within a
    stage)."""

    stages: list[Stage]


@dataclass(frozen=True)
class Embedded:
    model: ServedModel
    vectors: FloatArray  # [texts, dim], unit length
    truncated: list[bool]
    tokens: list[int]  # per text, what the model read (cached texts count what they counted)
    timings: Timings


@dataclass(frozen=True)
class HistoryItem:
    text: str
    weight: float = 1.0
    event: EventKind | None = None
    timestamp: float | None = None  # Unix seconds


@dataclass(frozen=True)
class Recommended(Scored):
    """`order` and the per-candidate lists cover the candidates left after `excluded` (request indices)."""

    kept: list[int]
    excluded: list[int]


class Service:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.provider = resolve_provider(settings.provider)
        self.cache = EmbeddingCache(settings.cache_size)
        self.registry = ModelRegistry(settings, metrics, self.provider, on_retire=self.cache.drop_version)
        self.started = False
        self.draining = False
        self.active_requests = 0
        self.last_request_at = 0.0

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.registry.refresh(retry_failed=True)
        self.started = True
        self._publish_ready()

    def begin_drain(self) -> None:
        self.draining = True
        self._publish_ready()

    def _publish_ready(self) -> None:
        self.metrics.ready.set(1 if self.readiness()[0] else 0)

    def required_models(self) -> list[str]:
        s = self.settings
        return sorted({s.sentiment_model, s.ranking_model, s.recommend_model})

    def readiness(self) -> tuple[bool, list[str]]:
        """Ready when started, not draining, and every model the endpoints default to is served."""
        problems: list[str] = []
        if not self.started:
            problems.append("loading models")
        if self.draining:
            problems.append("draining")
        if self.started:
            problems += [
                f"model {n} not served" for n in self.required_models() if not self.registry.is_served(n)
            ]
        return (not problems, problems)

    def liveness(self) -> list[str]:
        """Problems that a restart would fix: engines whose worker threads died."""
        return [
            f"model {s.name} version {s.version}: a worker thread died"
            for s in self.registry.served()
            if not s.engine.alive
        ]

    def request_started(self) -> None:
        self.active_requests += 1
        self.last_request_at = time.monotonic()

    def request_finished(self) -> None:
        self.active_requests -= 1

    def is_idle(self, quiet_s: float = 0.0) -> bool:
        return (
            self.active_requests == 0
            and time.monotonic() - self.last_request_at >= quiet_s
            and all(e.idle for e in self.registry.engines())
        )

    async def wait_idle(self, timeout: float, quiet_s: float = 0.0) -> bool:
        """Wait until no request is in flight, no work is queued, and no request came for `quiet_s`
        (callers still sending get 503s; closing the listener under them would break their connections)."""
        end = time.monotonic() + timeout
        while not self.is_idle(quiet_s):
            if time.monotonic() >= end:
                return False
            await asyncio.sleep(0.02)
        return True

    def check_accepting(self) -> None:
        if self.draining:
            raise Draining("the server is shutting down; retry on another instance")
        if not self.started:
            raise NotReady("the server is still loading its models")

    async def reload(self) -> list[str]:
        changed = await self.registry.refresh(retry_failed=True)
        self._publish_ready()
        return changed

    async def poll_store(self) -> None:
        """Reload loop for INFERENCE_RELOAD_POLL_S > 0 (failed versions are not retried by polling)."""
        while True:
            await asyncio.sleep(self.settings.reload_poll_s)
            if self.draining:
                return
            try:
                await self.registry.refresh(retry_failed=False)
                self._publish_ready()
            except Exception:
                log.exception("store poll failed")

    # --- limits -------------------------------------------------------------------------------------
    def check_texts(self, field: str, texts: Sequence[str]) -> None:
        """Refuse, naming the item, what no model should be asked: too many items, an over-long text, a
        text with nothing but whitespace, or one that cannot be tokenized (a lone UTF-16 surrogate: valid
        JSON, but not encodable as UTF-8). Runs before anything is queued, so a bad text fails only its
        own request."""
        s = self.settings
        if len(texts) > s.max_texts_per_request:
            raise InvalidRequest(f"{len(texts)} items, at most {s.max_texts_per_request} allowed", field)
        for i, text in enumerate(texts):
            self.check_text(f"{field}.{i}", text)

    def check_text(self, field: str, text: str) -> None:
        limit = self.settings.max_chars_per_text
        if len(text) > limit:
            raise InvalidRequest(f"{len(text)} characters, at most {limit} allowed", field)
        problem = text_problem(text)
        if problem is not None:
            raise InvalidRequest(problem, field)

    def _model(
        self, name: str | None, version: str | None, default: str, kinds: Sequence[str], endpoint: str
    ) -> ServedModel:
        served = self.registry.get(name or default, version)
        if served.kind not in kinds:
            raise InvalidRequest(
                f"{served.name} is a {served.kind} model; {endpoint} needs {' or '.join(kinds)}", "model"
            )
        return served

    def default_reranker(self) -> str:
        """The model of a rerank request that names none: the cross-encoder `rank_reranker` when it is
        served (it reads query and document together: better ordering), else the bi-encoder of /v1/rank."""
        if self.registry.is_served(self.settings.rank_reranker):
            return self.settings.rank_reranker
        return self.settings.ranking_model

    def _log_payload(self, endpoint: str, payload: object) -> None:
        if self.settings.log_payloads:
            log.info("payload %s %r", endpoint, payload)

    # --- endpoints ----------------------------------------------------------------------------------
    async def sentiment(
        self,
        texts: Sequence[str],
        model: str | None,
        version: str | None,
        deadline: float,
        disconnected: asyncio.Future[object] | None = None,
    ) -> Classified:
        self.check_texts("texts", texts)
        served = self._model(
            model, version, self.settings.sentiment_model, ["sequence-classification"], "sentiment"
        )
        self._log_payload("sentiment", texts)
        result = await served.engine.infer(texts, deadline, disconnected)
        timings = Timings()
        timings.add(result)
        return Classified(served, result.outputs, result.truncated, timings)

    async def rank(
        self,
        query: str,
        candidates: Sequence[str],
        top_k: int | None,
        model: str | None,
        version: str | None,
        deadline: float,
        disconnected: asyncio.Future[object] | None = None,
        rerank_top_n: int | None = None,
    ) -> Ranked:
        """One stage when `model` is a cross-encoder (it reads every pair); else the bi-encoder's cosine,
        then its best `rerank_top_n` (default and maximum: settings) re-scored by the cross-encoder
        `rank_reranker` and put first in its order. With no N asked, a store without that reranker ranks with
        the bi-encoder alone."""
        self.check_text("query", query)
        self.check_texts("candidates", candidates)
        served = self._model(
            model, version, self.settings.ranking_model, ["bi-encoder", "cross-encoder"], "rank"
        )
        top_n, reranker = self._second_stage(served, rerank_top_n)
        self._log_payload("rank", {"query": query, "candidates": candidates})
        timings = Timings()
        if served.kind == "cross-encoder":
            pairs: list[TextInput] = [(query, c) for c in candidates]
            scores, truncated = await self._cross_scores(served, pairs, deadline, disconnected, timings)
            order = _best_first(scores, top_k)
            return Ranked(served, order, scores, truncated, timings, [Stage(served, len(candidates))])
        vectors, flags, _ = await self._embed(served, [query, *candidates], deadline, disconnected, timings)
        scores = (vectors[1:] @ vectors[0]).astype(np.float32)
        truncated = flags[1:]
        order = _best_first(scores, None)
        stages = [Stage(served, len(candidates))]
        if reranker is not None:
            head = order[:top_n]
            pairs = [(query, candidates[i]) for i in head]
            rescored, cut = await self._cross_scores(reranker, pairs, deadline, disconnected, timings)
            scores[head] = rescored
            for i, flag in zip(head, cut, strict=True):
                truncated[i] = truncated[i] or flag
            order = [head[j] for j in _best_first(rescored, None)] + order[len(head) :]
            stages.append(Stage(reranker, len(head)))
        if top_k is not None:
            order = order[:top_k]
        return Ranked(served, order, scores, truncated, timings, stages)

    def _second_stage(self, served: ServedModel, asked: int | None) -> tuple[int, ServedModel | None]:
        """How many of the bi-encoder's best the cross-encoder `rank_reranker` re-scores, and that model: the
        request's N (0: none), else the default when a cross-encoder of that name is served."""
        name = self.settings.rank_reranker
        if asked is None:
            if served.kind == "cross-encoder" or not self.registry.is_served(name):
                return 0, None
            reranker = self.registry.get(name)
            if reranker.kind != "cross-encoder" or not self.settings.rank_rerank_top_n:
                return 0, None
            return self.settings.rank_rerank_top_n, reranker
        if not asked:
            return 0, None
        if served.kind == "cross-encoder":
            raise InvalidRequest(
                f"{served.name} is a cross-encoder; rerank_top_n needs a bi-encoder first", "rerank_top_n"
            )
        limit = self.settings.rank_rerank_max_top_n
        if asked > limit:
            raise InvalidRequest(f"{asked} candidates to rerank, at most {limit} allowed", "rerank_top_n")
        reranker = self.registry.get(name)  # not served: 404 naming it
        if reranker.kind != "cross-encoder":
            raise InvalidRequest(
                f"the reranker {name} (INFERENCE_RANK_RERANKER) is a {reranker.kind} model, not a "
                "cross-encoder",
                "rerank_top_n",
            )
        return asked, reranker

    async def recommend(
        self,
        history: Sequence[HistoryItem],
        candidates: Sequence[str],
        top_k: int | None,
        model: str | None,
        version: str | None,
        deadline: float,
        disconnected: asyncio.Future[object] | None = None,
        excluded: Sequence[int] = (),
    ) -> Recommended:
        """Scores the candidates not in `excluded` (indices) against the user vector: the model's user tower
        (app/user_vector.py) over the history in time order, each item also weighted by its own weight and
        its event's."""
        self.check_texts("history", [h.text for h in history])
        self.check_texts("candidates", candidates)
        if not history:
            raise InvalidRequest("at least one history item is needed to build the user vector", "history")
        history = in_time_order(history)
        served = self._model(model, version, self.settings.recommend_model, ["bi-encoder"], "recommend")
        event_weights = self.settings.recommend_event_weights
        tower = served.manifest.user_tower
        weights = user_weights(
            [h.weight * (event_weights.get(h.event, 1.0) if h.event else 1.0) for h in history],
            recency_weights(len(history), tower.recency_half_life if tower else None),
        )
        skip = set(excluded)
        kept = [i for i in range(len(candidates)) if i not in skip]
        self._log_payload("recommend", {"history": [h.text for h in history], "candidates": candidates})
        timings = Timings()
        texts = [h.text for h in history] + [candidates[i] for i in kept]
        vectors, flags, _ = await self._embed(served, texts, deadline, disconnected, timings)
        user = weights @ vectors[: len(history)].astype(np.float64)
        norm = float(np.linalg.norm(user))
        if not norm > 1e-12:  # the weighted history embeddings cancel out: no direction to rank by
            raise InvalidRequest("the weighted history gives no user direction; vary the weights", "history")
        scores = (vectors[len(history) :] @ (user / norm).astype(np.float32)).astype(np.float32)
        order = _best_first(scores, top_k)
        return Recommended(served, order, scores, flags[len(history) :], timings, kept, sorted(skip))

    async def embed(
        self,
        texts: Sequence[str],
        model: str | None,
        version: str | None,
        deadline: float,
        disconnected: asyncio.Future[object] | None = None,
        field: str = "input",
    ) -> Embedded:
        """Unit-length embeddings of `texts` in request order (a bi-encoder; the cache of /v1/rank and
        /v1/recommend); `field` names the texts in errors. Default model: the one of /v1/rank."""
        self.check_texts(field, texts)
        served = self._model(model, version, self.settings.ranking_model, ["bi-encoder"], "embeddings")
        self._log_payload("embeddings", texts)
        timings = Timings()
        vectors, truncated, tokens = await self._embed(served, texts, deadline, disconnected, timings)
        return Embedded(served, vectors, truncated, tokens, timings)

    async def score_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        model: str,
        version: str | None,
        deadline: float,
        disconnected: asyncio.Future[object] | None = None,
        fields: tuple[str, str] = ("query", "document"),
    ) -> Scored:
        """Cross-encoder relevance of each (query, document) pair, in request order (`order`: best first);
        `fields` name the two lists in errors."""
        if len(queries) != len(documents):
            raise InvalidRequest(f"{len(queries)} queries for {len(documents)} documents", fields[0])
        self.check_texts(fields[0], queries)
        self.check_texts(fields[1], documents)
        served = self._model(model, version, model, ["cross-encoder"], "pair scoring")
        self._log_payload("pairs", {"queries": queries, "documents": documents})
        timings = Timings()
        pairs: list[TextInput] = list(zip(queries, documents, strict=True))
        scores, truncated = await self._cross_scores(served, pairs, deadline, disconnected, timings)
        return Scored(served, _best_first(scores, None), scores, truncated, timings)

    async def _cross_scores(
        self,
        served: ServedModel,
        pairs: Sequence[TextInput],
        deadline: float,
        disconnected: asyncio.Future[object] | None,
        timings: Timings,
    ) -> tuple[FloatArray, list[bool]]:
        result = await served.engine.infer(pairs, deadline, disconnected)
        timings.add(result)
        scores = result.outputs[:, 0] if len(pairs) else np.zeros(0, dtype=np.float32)
        return scores, result.truncated

    async def _embed(
        self,
        served: ServedModel,
        texts: Sequence[str],
        deadline: float,
        disconnected: asyncio.Future[object] | None,
        timings: Timings,
    ) -> tuple[FloatArray, list[bool], list[int]]:
        """Unit-length embeddings of `texts` with their truncation flags and token counts, computing only
        those missing from the cache (once each)."""
        name, version = served.name, served.version
        found: list[CachedEmbedding | None] = [None] * len(texts)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            entry = self.cache.get(text_key(name, version, text))
            if entry is None:
                missing.setdefault(text, []).append(i)
            else:
                found[i] = entry
        hits = len(texts) - sum(len(v) for v in missing.values())
        if hits:
            self.metrics.cache_hits.labels(model=name).inc(hits)
        if missing:
            self.metrics.cache_misses.labels(model=name).inc(len(texts) - hits)
            unique = list(missing)
            result = await served.engine.infer(unique, deadline, disconnected)
            timings.add(result)
            for j, text in enumerate(unique):
                entry = CachedEmbedding(result.outputs[j].copy(), result.truncated[j], result.tokens[j])
                self.cache.put(text_key(name, version, text), entry)
                for i in missing[text]:
                    found[i] = entry
        entries = [e for e in found if e is not None]
        vectors = np.stack([e.vector for e in entries]) if entries else np.zeros((0, 0), dtype=np.float32)
        return vectors, [e.truncated for e in entries], [e.tokens for e in entries]


def _best_first(scores: FloatArray, top_k: int | None) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[: min(top_k, len(order))]
    return [int(i) for i in order]


def shorten(vectors: FloatArray, dimensions: int) -> FloatArray:
    """The first `dimensions` components of each row, scaled back to unit length (what OpenAI's
    `dimensions` does: a shortened embedding still compares by dot product). A row whose first components
    are all zero stays zero."""
    head = vectors[:, :dimensions].astype(np.float32)
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    out: FloatArray = (head / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return out


def text_problem(text: str) -> str | None:
    """Why a text cannot be sent to a model, or None. Empty and whitespace-only texts are refused: there
    is nothing to classify or match, and a model's answer for them would be noise the caller acts on."""
    if not text or text.isspace():
        return "text is empty or only whitespace"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"text is not valid Unicode: {exc.reason} at character {exc.start} "
                "(a lone UTF-16 surrogate, e.g. half of an emoji)"
            )
    return None


def in_time_order(history: Sequence[HistoryItem]) -> list[HistoryItem]:
    """The history sorted by timestamp (stable: equal times keep their order) when every item has one, as
    given when none has; a mix is refused, since the untimed items would have no place."""
    timed = [h.timestamp is not None for h in history]
    if all(timed):
        return sorted(history, key=lambda h: h.timestamp or 0.0)
    if any(timed):
        raise InvalidRequest(
            f"{sum(timed)} of {len(history)} history items have a timestamp; give one for every item or none",
            "history",
        )
    return list(history)


def user_weights(weights: Sequence[float], recency: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The request's history weights times the model's recency weights, scaled to a maximum of 1 in float64,
    so that any finite weights (1e-30 .. 1e300) give the same user vector as their ratios; refuses
    non-finite, negative or all-zero weights."""
    w = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(w).all() or (w < 0).any() or not w.max(initial=0.0) > 0:
        raise InvalidRequest("weights must be finite, non-negative and not all zero", "history")
    w = (w / w.max()) * recency
    if not w.max() > 0:  # recency underflowed every weighted item (a very long history of old weights)
        raise InvalidRequest("the weighted items are too old for the model's recency weights", "history")
    scaled: npt.NDArray[np.float64] = w / w.max()
    return scaled
