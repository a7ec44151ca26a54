"""Purchase and rating sequences with item texts, split leave-last-out.

- Amazon Office Products 5-core (`recommendation/amazon_office_{items,sequences}.tsv`): 3,231 users, 3,459
  items, each user's items in time order; an item's text is its title.
- MovieLens-100K (recbole's bundled copy): 943 users, 1,682 titled items, ratings ordered by timestamp; an
  item's text is "Title (Year) (Genre, Genre)" as the MovieLens gate uses it.

Per user, the last item is the test target and the one before it the validation target; what precedes a
target is the history, and every user's history is the training data of the baselines.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from conversion.data import DataError, data_root, read_tsv
from conversion.data.movielens import movielens_items, movielens_ratings

Catalog = Literal["amazon-office", "movielens-100k"]
CATALOGS: tuple[Catalog, ...] = ("amazon-office", "movielens-100k")
Split = Literal["validation", "test"]


@dataclass(frozen=True)
class Interactions:
    name: Catalog
    item_text: dict[str, str]
    sequences: dict[str, list[str]]  # user -> item ids, oldest first

    def split(self, split: Split) -> list[tuple[str, list[str], str]]:
        """(user, history, target) for every user with at least one item before the target."""
        drop = 1 if split == "test" else 2
        cases = []
        for user, items in self.sequences.items():
            if len(items) >= drop + 1:
                kept = items[: len(items) - drop + 1]
                cases.append((user, kept[:-1], kept[-1]))
        return cases


def load_interactions(name: Catalog) -> Interactions:
    if name == "amazon-office":
        return _office()
    return _movielens()


def _office() -> Interactions:
    folder = data_root() / "recommendation"
    item_text = {row["item_id"]: row["title"] for row in read_tsv(folder / "amazon_office_items.tsv")}
    sequences = {
        row["user_id"]: row["items"].split() for row in read_tsv(folder / "amazon_office_sequences.tsv")
    }
    unknown = {item for items in sequences.values() for item in items} - set(item_text)
    if unknown:
        raise DataError(f"amazon_office_sequences.tsv names {len(unknown)} items missing from the items file")
    return Interactions("amazon-office", item_text, sequences)


def _movielens() -> Interactions:
    by_user: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for user, item, timestamp in movielens_ratings():
        by_user[user].append((timestamp, item))
    sequences = {user: [item for _, item in sorted(events)] for user, events in by_user.items()}
    return Interactions("movielens-100k", movielens_items(), sequences)
