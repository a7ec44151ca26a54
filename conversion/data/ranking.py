"""WANDS product-search queries with their product class, and a pool of real product texts to rank."""

from __future__ import annotations

import random
from dataclasses import dataclass

from conversion.data import data_root, read_tsv
from conversion.data.sentiment import load_sentiment


@dataclass(frozen=True)
class RankingSet:
    queries: list[str]
    query_classes: list[str]
    pool: list[str]  # the distinct class names first, then product review sentences


def load_ranking(max_queries: int | None = None, pool_reviews: int = 1000, seed: int = 0) -> RankingSet:
    rows = read_tsv(data_root() / "ranking" / "wands_queries.tsv")
    classes = sorted({row["query_class"] for row in rows if row["query_class"]})
    if max_queries is not None and max_queries < len(rows):
        rows = random.Random(seed).sample(rows, max_queries)
    reviews = load_sentiment("uci_amazon").texts[:pool_reviews] if pool_reviews else []
    return RankingSet([row["query"] for row in rows], [row["query_class"] for row in rows], classes + reviews)


def class_names() -> list[str]:
    rows = read_tsv(data_root() / "ranking" / "wands_queries.tsv")
    return sorted({row["query_class"] for row in rows if row["query_class"]})
