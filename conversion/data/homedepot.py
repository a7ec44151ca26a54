"""Home Depot search relevance: real queries with product titles judged 1 (irrelevant) .. 3 (exact), the mean
of three raters. Train and validation hold different queries; validation is never trained on.

A query's graded gain is `relevance - 1` (0 .. 2), so an irrelevant judged product counts as much as an
unjudged one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from conversion.data import DataError, data_root, read_tsv

Split = Literal["train", "validation"]


@dataclass(frozen=True)
class JudgedQuery:
    text: str
    titles: list[str]
    relevance: list[float]  # 1 .. 3, per title

    @property
    def gains(self) -> list[float]:
        return [r - 1.0 for r in self.relevance]


def load_homedepot(split: Split, max_queries: int | None = None, seed: int = 0) -> list[JudgedQuery]:
    """Each query with its judged titles, in file order (or a fixed random sample of `max_queries`)."""
    rows = read_tsv(data_root() / "ranking" / f"homedepot_{split}.tsv")
    grouped: dict[str, JudgedQuery] = {}
    for row in rows:
        query = grouped.setdefault(row["query_id"], JudgedQuery(row["query"], [], []))
        try:
            relevance = float(row["relevance"])
        except ValueError as exc:
            raise DataError(f"homedepot_{split}.tsv: relevance {row['relevance']!r} is not a number") from exc
        query.titles.append(row["product_title"])
        query.relevance.append(relevance)
    queries = list(grouped.values())
    if max_queries is not None and max_queries < len(queries):
        queries = random.Random(seed).sample(queries, max_queries)
    return queries
