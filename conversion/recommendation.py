"""Recommendation quality: next-item HR@10 and NDCG@10, leave-last-out, in two protocols.

- `sampled`: the target among 99 items the user never had (seeded), the common protocol of the literature.
- `full`: the target among the whole catalog, the user's other history items left out (a shop does not
  recommend what was just bought; a re-bought target still counts).

Scores are tie-aware: a target tied with others takes each of their positions with equal probability, so a
baseline that scores most items 0 is not credited with ranking the target first. Beside a text model the
report carries three baselines fitted on the histories (never on the targets): random, popularity, and
item-to-item co-occurrence (cosine similarity of the items' user vectors, scikit-learn's).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse

from app.user_vector import recency_weights
from conversion.data.interactions import Interactions, Split

Protocol = Literal["sampled", "full"]
PROTOCOLS: tuple[Protocol, ...] = ("sampled", "full")
Baseline = Literal["random", "popularity", "co-occurrence", "untuned-content"]
BASELINES: tuple[Baseline, ...] = ("random", "popularity", "co-occurrence", "untuned-content")
K = 10


@dataclass(frozen=True)
class RecommendationTask:
    items: list[str]  # catalog order; scores are [users, len(items)]
    texts: list[str]
    histories: list[np.ndarray]  # per user: item indices, oldest first
    targets: np.ndarray  # per user: the held-out item's index
    sampled: list[np.ndarray]  # per user: `negatives` items the user never had (all of them when fewer)
    training: sparse.csr_matrix  # users x items: 1 where the item is in the user's history

    @classmethod
    def build(
        cls,
        data: Interactions,
        split: Split,
        negatives: int = 99,
        seed: int = 0,
        max_users: int | None = None,
    ) -> RecommendationTask:
        """All users (or a seeded sample of `max_users`); baselines fit the kept users' histories."""
        items = sorted(data.item_text)
        index = {item: i for i, item in enumerate(items)}
        rng = random.Random(seed)
        cases = data.split(split)
        if max_users is not None and max_users < len(cases):
            cases = rng.sample(cases, max_users)
        histories, targets, sampled = [], [], []
        for user, history, target in cases:
            had = {index[i] for i in data.sequences[user]}
            unseen = [i for i in range(len(items)) if i not in had]
            histories.append(np.array([index[i] for i in history], dtype=np.int64))
            targets.append(index[target])
            sampled.append(np.array(rng.sample(unseen, min(negatives, len(unseen))), dtype=np.int64))
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        training = sparse.csr_matrix(
            (np.ones(len(rows)), (rows, np.concatenate(histories))), shape=(len(histories), len(items))
        )
        training.data[:] = 1.0  # a re-bought item counts once
        texts = [data.item_text[i] for i in items]
        return cls(items, texts, histories, np.array(targets), sampled, training)


def hit_and_ndcg(scores: np.ndarray, task: RecommendationTask, protocol: Protocol) -> tuple[float, float]:
    """Mean HR@K and NDCG@K of `scores` [users, items] over the task's users."""
    hits, gains = [], []
    discounts = 1.0 / np.log2(np.arange(K) + 2.0)
    for user, (row, target) in enumerate(zip(scores, task.targets, strict=True)):
        if protocol == "sampled":
            others = row[task.sampled[user]]
        else:
            mask = np.ones(len(row), dtype=bool)
            mask[task.histories[user]] = False
            mask[target] = False
            others = row[mask]
        greater = int((others > row[target]).sum())
        tied = int((others == row[target]).sum())
        # The target is at each position greater .. greater + tied with probability 1 / (tied + 1).
        positions = np.arange(greater, min(greater + tied, K - 1) + 1)
        hits.append(len(positions) / (tied + 1))
        gains.append(float(discounts[positions].sum()) / (tied + 1))
    return float(np.mean(hits)), float(np.mean(gains))


def baseline_scores(task: RecommendationTask, baseline: Baseline, seed: int = 0) -> np.ndarray:
    """Scores of a baseline fitted on the histories (not the untuned content model: that one needs a
    network, see conversion/validate.py)."""
    users, items = task.training.shape
    if baseline == "untuned-content":
        raise ValueError("the untuned content baseline is scored by the validator")
    if baseline == "random":
        return np.random.default_rng(seed).random((users, items))
    popularity = np.asarray(task.training.sum(axis=0)).ravel()
    if baseline == "popularity":
        return np.broadcast_to(popularity, (users, items))
    from sklearn.metrics.pairwise import cosine_similarity

    similarity = cosine_similarity(task.training.T, dense_output=False)
    similarity.setdiag(0.0)  # an item does not recommend itself
    scores: np.ndarray = (task.training @ similarity).toarray()
    return scores


def content_scores(
    task: RecommendationTask, item_vectors: np.ndarray, history: int = 20, half_life: float | None = None
) -> np.ndarray:
    """What /v1/recommend computes: cosine of each item to the recency-weighted mean of the user's last
    `history` items (app/user_vector.py)."""
    users = np.stack(
        [recency_weights(len(h[-history:]), half_life) @ item_vectors[h[-history:]] for h in task.histories]
    )
    users /= np.maximum(np.linalg.norm(users, axis=1, keepdims=True), 1e-12)
    scores: np.ndarray = users @ item_vectors.T
    return scores


def report(
    task: RecommendationTask, scores: np.ndarray, protocols: Sequence[Protocol] = PROTOCOLS
) -> dict[Protocol, tuple[float, float]]:
    return {protocol: hit_and_ndcg(scores, task, protocol) for protocol in protocols}
