"""Realistic request bodies for the three endpoints, built from the shared real data.

- sentiment: one real review sentence per request (UCI Amazon/Yelp/IMDB reviews, SST-2 validation).
- rank: a real WANDS product-search query with 50-200 candidate product titles.
- recommend: a real MovieLens-100K user's last 5-50 rated titles as history, 100 candidate titles.

WANDS ships queries and their product classes but no product texts, so rank candidates are product-like
titles composed from real queries and classes ("Walnut Mid-Century Coffee Table - Coffee & Cocktail
Tables"), drawn from a pool large enough that an item-embedding cache does not see only repeats.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Endpoint = Literal["sentiment", "rank", "recommend"]
ENDPOINTS: tuple[Endpoint, ...] = ("sentiment", "rank", "recommend")
PATHS: dict[Endpoint, str] = {"sentiment": "/v1/sentiment", "rank": "/v1/rank", "recommend": "/v1/recommend"}
SENTIMENT_FILES = ("uci_amazon", "uci_yelp", "uci_imdb", "sst2_validation")
# Distinct rank titles: more than the service's default embedding cache (20,000) holds, so that rank cells
# measure a mix of cached and computed embeddings rather than the cache alone.
RANK_POOL = 50_000

_STYLES = (
    "Modern",
    "Rustic",
    "Mid-Century",
    "Farmhouse",
    "Industrial",
    "Coastal",
    "Scandinavian",
    "Classic",
    "Outdoor",
    "Handmade",
    "Upholstered",
    "Solid Wood",
    "Metal",
    "Velvet",
    "Linen",
    "Oak",
    "Walnut",
    "Black",
    "White",
    "Grey",
    "Blue",
    "Green",
    "Gold",
    "Brass",
    "Round",
    "Oversized",
    "Compact",
)


@dataclass(frozen=True)
class Payload:
    """One request: its endpoint, the serialized JSON body and how many texts the model must encode."""

    endpoint: Endpoint
    body: bytes
    texts: int


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def review_texts(data_root: Path, files: Sequence[str] = SENTIMENT_FILES) -> list[str]:
    texts: list[str] = []
    for name in files:
        texts.extend(row["text"] for row in read_tsv(data_root / "sentiment" / f"{name}.tsv") if row["text"])
    if not texts:
        raise ValueError(f"no sentiment texts under {data_root / 'sentiment'}")
    return texts


def wands_queries(data_root: Path) -> list[tuple[str, str]]:
    rows = read_tsv(data_root / "ranking" / "wands_queries.tsv")
    return [(row["query"], row["query_class"]) for row in rows if row["query"]]


def product_titles(queries: Sequence[tuple[str, str]], count: int, rng: random.Random) -> list[str]:
    """`count` distinct product-like titles composed from real queries and their product classes."""
    if not queries:
        raise ValueError("no queries to compose product titles from")
    titles: set[str] = set()
    attempts = 0
    while len(titles) < count and attempts < count * 20:
        attempts += 1
        query, klass = rng.choice(queries)
        style = rng.choice(_STYLES)
        words = " ".join(word.capitalize() for word in query.split())
        title = f"{style} {words} - {klass}" if klass else f"{style} {words}"
        if rng.random() < 0.3:
            title += f", Set of {rng.randint(2, 6)}"
        titles.add(title)
    return sorted(titles)


def movielens(ml_dir: Path) -> tuple[dict[str, str], list[list[str]]]:
    """Item titles by id, and each user's rated item ids in time order."""
    titles: dict[str, str] = {}
    with (ml_dir / "ml-100k.item").open(encoding="utf-8", errors="replace") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        id_col = header.index("item_id:token")
        title_col = header.index("movie_title:token_seq")
        for line in handle:
            cols = line.rstrip("\n").split("\t")
            if len(cols) > title_col and cols[title_col]:
                titles[cols[id_col]] = cols[title_col]
    by_user: dict[str, list[tuple[int, str]]] = {}
    with (ml_dir / "ml-100k.inter").open(encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        user_col, item_col = header.index("user_id:token"), header.index("item_id:token")
        time_col = header.index("timestamp:float")
        for line in handle:
            cols = line.rstrip("\n").split("\t")
            if cols[item_col] in titles:
                by_user.setdefault(cols[user_col], []).append((int(float(cols[time_col])), cols[item_col]))
    histories = [[item for _, item in sorted(events)] for _, events in sorted(by_user.items())]
    return titles, histories


def _body(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def sentiment_payloads(
    texts: Sequence[str], count: int, rng: random.Random, per_request: int = 1
) -> list[Payload]:
    """One storefront text per request by default; `per_request` > 1 for a page of reviews at once."""
    return [
        Payload("sentiment", _body({"texts": [rng.choice(texts) for _ in range(per_request)]}), per_request)
        for _ in range(count)
    ]


def rank_payloads(
    queries: Sequence[tuple[str, str]],
    titles: Sequence[str],
    count: int,
    rng: random.Random,
    *,
    min_candidates: int = 50,
    max_candidates: int = 200,
    top_k: int = 10,
) -> list[Payload]:
    if len(titles) < max_candidates:
        raise ValueError(f"need at least {max_candidates} titles, got {len(titles)}")
    out = []
    for _ in range(count):
        query, _klass = rng.choice(queries)
        ids = rng.sample(range(len(titles)), rng.randint(min_candidates, max_candidates))
        candidates = [{"id": f"sku-{i}", "text": titles[i]} for i in ids]
        out.append(
            Payload(
                "rank",
                # the bi-encoder alone, like the baseline (two-stage ranking: bench.rank_stages)
                _body({"query": query, "candidates": candidates, "top_k": top_k, "rerank_top_n": 0}),
                1 + len(candidates),
            )
        )
    return out


def recommend_payloads(
    titles: dict[str, str],
    histories: Sequence[Sequence[str]],
    count: int,
    rng: random.Random,
    *,
    min_history: int = 5,
    max_history: int = 50,
    candidates: int = 100,
    top_k: int = 20,
) -> list[Payload]:
    eligible = [h for h in histories if len(h) >= min_history]
    if not eligible or len(titles) < candidates:
        raise ValueError("not enough users or items for recommend payloads")
    item_ids = sorted(titles)
    out = []
    for _ in range(count):
        events = rng.choice(eligible)
        length = rng.randint(min_history, min(max_history, len(events)))
        history = [{"id": f"item-{i}", "text": titles[i]} for i in events[-length:]]
        seen = set(events)
        pool = [i for i in rng.sample(item_ids, candidates * 2) if i not in seen][:candidates]
        while len(pool) < candidates:  # a user who rated most of the catalogue: allow seen items
            pool.append(rng.choice(item_ids))
        cands = [{"id": f"item-{i}", "text": titles[i]} for i in pool]
        body = {"history": history, "candidates": cands, "top_k": top_k}
        out.append(Payload("recommend", _body(body), len(history) + len(cands)))
    return out


def build_payloads(
    data_root: Path,
    ml_dir: Path | None,
    endpoint: Endpoint,
    count: int,
    seed: int = 0,
    texts_per_request: int = 1,
) -> list[Payload]:
    """`count` request bodies for `endpoint`, the same for every server given the same seed."""
    rng = random.Random(f"{seed}-{endpoint}")
    if endpoint == "sentiment":
        return sentiment_payloads(review_texts(data_root), count, rng, texts_per_request)
    queries = wands_queries(data_root)
    if endpoint == "rank":
        return rank_payloads(queries, product_titles(queries, RANK_POOL, rng), count, rng)
    if ml_dir is not None:
        titles, histories = movielens(ml_dir)
    else:  # no MovieLens: product titles and random histories over them
        pool = product_titles(queries, 2000, rng)
        titles = {str(i): t for i, t in enumerate(pool)}
        histories = [rng.sample(sorted(titles), 60) for _ in range(200)]
    return recommend_payloads(titles, histories, count, rng)


def write_payloads(path: Path, payloads: Sequence[Payload]) -> None:
    """JSON lines, so that a machine without ../shared/data (the GPU box) can replay the same bodies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for p in payloads:
            handle.write(
                json.dumps({"endpoint": p.endpoint, "texts": p.texts, "body": p.body.decode()}) + "\n"
            )


def read_payloads(path: Path) -> list[Payload]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if row["endpoint"] not in ENDPOINTS:
                raise ValueError(f"{path}: unknown endpoint {row['endpoint']!r}")
            out.append(Payload(row["endpoint"], row["body"].encode(), int(row["texts"])))
    if not out:
        raise ValueError(f"{path}: no payloads")
    return out
