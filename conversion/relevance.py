"""Absolute search quality: NDCG@10 of a scorer against Home Depot's graded judgements, in two settings.

- `rerank`: each query's judged titles only (what a reranker behind a first stage sees).
- `catalog`: each query against every title of the split; titles judged for other queries count as
  irrelevant (gain 0), so a model must also keep the other queries' products out of the top 10.

Queries count when they have at least two judged titles and one is better than irrelevant (NDCG is undefined
otherwise). NDCG is scikit-learn's (ties averaged); the lexical baseline is bm25s's BM25 (Lucene variant,
English stop words, Snowball stemming).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from conversion.data.homedepot import JudgedQuery

Setting = Literal["rerank", "catalog"]
SETTINGS: tuple[Setting, ...] = ("rerank", "catalog")
K = 10


@dataclass(frozen=True)
class RelevanceSet:
    queries: list[str]
    catalog: list[str]  # distinct titles, sorted
    judged: list[np.ndarray]  # per query: catalog indices of its judged titles
    gains: list[np.ndarray]  # per query: the gain of each judged title

    @classmethod
    def from_judgements(cls, judged: Sequence[JudgedQuery]) -> RelevanceSet:
        kept = [q for q in judged if len(set(q.titles)) >= 2 and max(q.gains) > 0]
        catalog = sorted({t for q in kept for t in q.titles})
        index = {t: i for i, t in enumerate(catalog)}
        rows: list[np.ndarray] = []
        gains: list[np.ndarray] = []
        for q in kept:
            best: dict[int, float] = {}
            for title, gain in zip(q.titles, q.gains, strict=True):
                best[index[title]] = max(gain, best.get(index[title], 0.0))
            rows.append(np.fromiter(best, dtype=np.int64))
            gains.append(np.fromiter(best.values(), dtype=np.float64))
        return cls([q.text for q in kept], catalog, rows, gains)

    def sample_queries(self, count: int | None, seed: int) -> RelevanceSet:
        """A seeded sample of `count` queries (None or more than there are: all) against the same catalog."""
        if count is None or count >= len(self.queries):
            return self
        keep = sorted(random.Random(seed).sample(range(len(self.queries)), count))
        return RelevanceSet(
            [self.queries[q] for q in keep],
            self.catalog,
            [self.judged[q] for q in keep],
            [self.gains[q] for q in keep],
        )


def ndcg_at_k(relevance: RelevanceSet, scores: np.ndarray, k: int = K) -> dict[Setting, float]:
    """Mean NDCG@k over the queries in both settings; `scores` is [queries, catalog]."""
    return {"rerank": rerank_ndcg(relevance, scores, k), "catalog": catalog_ndcg(relevance, scores, k)}


def rerank_ndcg(relevance: RelevanceSet, scores: np.ndarray, k: int = K) -> float:
    """Mean NDCG@k of each query's judged titles ordered by `scores` ([queries, catalog]; only the judged
    cells are read)."""
    from sklearn.metrics import ndcg_score

    _check_shape(relevance, scores)
    # One call over [queries, most judged] matrices (one call per query spent ~2 ms each in sklearn's input
    # checks): the padding has gain 0 and a score below every real one, so no query's NDCG changes.
    width = max(len(judged) for judged in relevance.judged)
    floor = float(np.min(scores)) - 1.0
    truth = np.zeros((len(relevance.judged), width))
    ordered = np.full((len(relevance.judged), width), floor)
    for q, (judged, gains) in enumerate(zip(relevance.judged, relevance.gains, strict=True)):
        truth[q, : len(judged)] = gains
        ordered[q, : len(judged)] = scores[q, judged]
    return float(ndcg_score(truth, ordered, k=k))


def catalog_ndcg(relevance: RelevanceSet, scores: np.ndarray, k: int = K) -> float:
    """Mean NDCG@k of each query against the whole catalog ordered by `scores` ([queries, catalog])."""
    from sklearn.metrics import ndcg_score

    _check_shape(relevance, scores)
    truth = np.zeros(scores.shape)
    for q, (judged, gains) in enumerate(zip(relevance.judged, relevance.gains, strict=True)):
        truth[q, judged] = gains
    return float(ndcg_score(truth, scores, k=k))


def _check_shape(relevance: RelevanceSet, scores: np.ndarray) -> None:
    if scores.shape != (len(relevance.queries), len(relevance.catalog)):
        raise ValueError(f"scores {scores.shape} for {len(relevance.queries)} x {len(relevance.catalog)}")


def shortlist(first_stage: np.ndarray, depth: int) -> np.ndarray:
    """Per query ([queries, catalog] scores), the catalog indices of the first stage's best `depth`."""
    top: np.ndarray = np.argsort(-first_stage, axis=1, kind="stable")[:, :depth]
    return top


def two_stage_scores(first_stage: np.ndarray, top: np.ndarray, rescored: np.ndarray) -> np.ndarray:
    """What /v1/rank's two-stage ranking orders by: each query's shortlist `top` ([queries, depth]) by the
    second stage's scores `rescored` (same shape), above the rest of the catalog in first-stage order."""
    # Ranks, not raw scores: the two stages' scores are on different scales.
    out = -_ranks(first_stage).astype(np.float64) - 1.0  # <= -1: below every shortlisted title
    np.put_along_axis(out, top, (top.shape[1] - _ranks(rescored)).astype(np.float64), axis=1)
    return out


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Each row's rank of each score, 0 for the best (ties in index order)."""
    ranks: np.ndarray = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1, kind="stable")
    return ranks


def embedding_scores(query_vectors: np.ndarray, title_vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of unit vectors."""
    scores: np.ndarray = query_vectors @ title_vectors.T
    return scores


def bm25_scores(queries: Sequence[str], catalog: Sequence[str]) -> np.ndarray:
    """BM25 of every query against every catalog title."""
    index, tokens = _bm25(queries, catalog)
    # A query of stop words only has no terms: it scores every title 0.
    rows = [index.get_scores(query) if query else np.zeros(len(catalog)) for query in tokens]
    return np.stack(rows).astype(np.float64)


def _bm25(queries: Sequence[str], catalog: Sequence[str]) -> tuple[Any, list[list[str]]]:
    import bm25s
    import Stemmer

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs each index build at DEBUG
    stemmer = Stemmer.Stemmer("english")
    index = bm25s.BM25()
    index.index(
        bm25s.tokenize(list(catalog), stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )
    tokens = bm25s.tokenize(
        list(queries), stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False
    )
    return index, tokens
