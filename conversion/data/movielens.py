"""MovieLens-100K from recbole's bundled copy: item texts and timestamped ratings (turned into sequences by
conversion/data/interactions.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from conversion.data import DataError, read_tsv


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
