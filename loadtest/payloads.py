"""Storefront request bodies built from real text where this checkout has it.

- reviews (sentiment): UCI Amazon/Yelp review sentences and SST-2 validation sentences
  (`../shared/data/sentiment`);
- search queries (rank): Wayfair WANDS queries (`../shared/data/ranking/wands_queries.tsv`), whose product
  classes also seed the generated product titles;
- user history and candidates (recommend): MovieLens-100K titles with their genres (shipped in the
  recbole wheel).

Without ../shared or recbole it falls back to generated texts, so the load test runs anywhere. Sizes are
drawn from skewed distributions (most requests small, a long tail of large ones), as a storefront sends.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"

Body = dict[str, Any]

_ADJECTIVES = (
    "Modern", "Rustic", "Compact", "Oversized", "Solid Wood", "Velvet", "Outdoor", "Adjustable", "Wireless",
    "Stainless Steel", "Handmade", "Minimalist", "Vintage", "Ergonomic", "Waterproof", "Foldable",
)  # fmt: skip
_COLOURS = ("Black", "White", "Walnut", "Grey", "Navy", "Oak", "Sage Green", "Brass", "Ivory", "Charcoal")
_NOUNS = (
    "Accent Chair", "Coffee Table", "Floor Lamp", "Area Rug", "Bookshelf", "Bar Stool", "Desk", "Sofa",
    "Nightstand", "Wall Mirror", "Dining Table", "Throw Pillow", "Bluetooth Speaker", "Office Chair",
)  # fmt: skip
_DETAILS = (
    "", "", "", " (Set of 2)", ", 48 inch", " with Storage", " with USB Charging Port", ", Assembly Required",
    " - Scratch Resistant Finish", ", Pet Friendly Fabric",
)  # fmt: skip
_REVIEW_WORDS = (
    "great quality for the price", "stopped working after a week", "exactly as described",
    "the battery died after two days", "would buy again", "arrived damaged and support never answered",
    "comfortable and easy to assemble", "colour is darker than the photos", "sound is clear and loud",
)  # fmt: skip


def _read_column(path: Path, column: str) -> list[str]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row[column].strip() for row in reader if row.get(column, "").strip()]


def _movielens_items() -> list[tuple[str, str]]:
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return []
    item_file = Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k" / "ml-100k.item"
    if not item_file.is_file():
        return []
    titles = []
    with item_file.open(encoding="utf-8", errors="replace") as handle:
        next(handle)  # typed header: item_id:token movie_title:token_seq release_year:token class:token_seq
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 4 and parts[1]:
                titles.append((f"ml-{parts[0]}", f"{parts[1]} ({parts[2]}) - {parts[3]}"))
    return titles


CATALOGUE_SIZE = 5000


def _catalogue(classes: list[str], size: int) -> list[tuple[str, str]]:
    """A fixed catalogue (the same in every run and every user), so repeated products hit the service's
    embedding cache as a real storefront's would."""
    r = random.Random(0)
    return [
        (f"sku-{n}", f"{r.choice(_ADJECTIVES)} {r.choice(classes)}, {r.choice(_COLOURS)}{r.choice(_DETAILS)}")
        for n in range(size)
    ]


@dataclass
class Corpus:
    """The texts payloads are drawn from, and where they came from (for the run's report)."""

    reviews: list[str]
    queries: list[str]
    catalogue: list[tuple[str, str]]  # (sku, product title): what search results are ranked from
    items: list[tuple[str, str]]  # (item id, text): what users have seen and are recommended
    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path | None = None) -> Corpus:
        root = data_dir or Path(os.environ.get("LOADTEST_DATA_DIR", DEFAULT_DATA_DIR))
        sentiment = root / "sentiment"
        reviews = [
            text
            for name in ("uci_amazon.tsv", "uci_yelp.tsv", "sst2_validation.tsv")
            for text in _read_column(sentiment / name, "text")
        ]
        wands = root / "ranking" / "wands_queries.tsv"
        queries = _read_column(wands, "query")
        classes = sorted(set(_read_column(wands, "query_class"))) or list(_NOUNS)
        catalogue = _catalogue(classes, CATALOGUE_SIZE)
        items = _movielens_items() or catalogue
        sources = {
            "reviews": f"{len(reviews)} real review sentences" if reviews else "generated",
            "queries": f"{len(queries)} WANDS queries" if queries else "generated",
            "catalogue": f"{len(catalogue)} generated titles over {len(classes)} product classes",
            "items": f"{len(items)} MovieLens-100K titles" if items is not catalogue else "the catalogue",
        }
        return cls(reviews, queries, catalogue, items, sources)


class Payloads:
    """Draws request bodies; one instance per simulated user, seeded for repeatable runs."""

    def __init__(self, corpus: Corpus, seed: int | None = None) -> None:
        self.corpus = corpus
        self.rng = random.Random(seed)

    # --- texts ------------------------------------------------------------------------------------
    def review(self) -> str:
        r = self.rng
        pool = self.corpus.reviews
        if not pool:
            return ". ".join(r.choice(_REVIEW_WORDS).capitalize() for _ in range(r.randint(1, 3))) + "."
        # One in five reviews is several sentences long: the long tail that drives padding and truncation.
        count = 1 if r.random() < 0.8 else r.randint(2, 6)
        return " ".join(r.choice(pool) for _ in range(count))

    def query(self) -> str:
        if self.corpus.queries:
            return self.rng.choice(self.corpus.queries)
        return f"{self.rng.choice(_COLOURS).lower()} {self.rng.choice(_NOUNS).lower()}"

    @staticmethod
    def _entries(pairs: list[tuple[str, str]]) -> list[Body]:
        return [{"id": item_id, "text": text} for item_id, text in pairs]

    # --- sizes ------------------------------------------------------------------------------------
    def _skewed(self, low: int, typical: int, high: int) -> int:
        """Mostly around `typical`, sometimes up to `high`."""
        value = round(self.rng.triangular(low, high, typical))
        return max(low, min(high, value))

    # --- bodies -----------------------------------------------------------------------------------
    def sentiment(self) -> Body:
        roll = self.rng.random()
        count = 1 if roll < 0.6 else self.rng.randint(2, 8) if roll < 0.9 else self.rng.randint(9, 32)
        return {"texts": [self.review() for _ in range(count)]}

    def rank(self) -> Body:
        count = self._skewed(10, 40, 200)
        candidates = self._entries(self.rng.sample(self.corpus.catalogue, count))
        return {"query": self.query(), "candidates": candidates, "top_k": self.rng.choice((10, 10, 20, 50))}

    def recommend(self) -> Body:
        n_history, n_candidates = self._skewed(5, 12, 50), self._skewed(20, 60, 100)
        picked = self.rng.sample(self.corpus.items, n_history + n_candidates)
        history = self._entries(picked[:n_history])
        with_events, timed = self.rng.random() < 0.5, self.rng.random() < 0.5
        when = 1_767_225_600 - 86_400 * n_history  # a day apart, oldest first
        for entry in history:
            if self.rng.random() < 0.3:  # explicit signals (purchase, rating) weigh more than views
                entry["weight"] = round(self.rng.uniform(0.5, 3.0), 2)
            if with_events:
                entry["event"] = self.rng.choices(("view", "cart", "purchase"), (6, 3, 1))[0]
            if timed:
                when += 86_400
                entry["timestamp"] = when
        candidates = self._entries(picked[n_history:])
        if self.rng.random() < 0.2:  # the page also lists something the user already has: left out
            candidates[self.rng.randrange(len(candidates))] = {
                "id": history[-1]["id"],
                "text": history[-1]["text"],
            }
        return {"history": history, "candidates": candidates, "top_k": 20}


def size_bucket(count: int, edges: tuple[int, ...]) -> str:
    """`count` as a label for locust's `name=` grouping, e.g. 37 with (10, 50, 200) -> '11-50'."""
    low = 1
    for edge in edges:
        if count <= edge:
            return f"{low}-{edge}" if low != edge else str(edge)
        low = edge + 1
    return f">{edges[-1]}"
