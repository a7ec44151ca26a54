"""Sentiment TSVs (`text<TAB>label`, 1 = positive); validation and calibration sets are disjoint."""

from __future__ import annotations

import random
from dataclasses import dataclass

from conversion.data import DataError, data_root, read_tsv

VALIDATION_SETS = ("sst2_validation", "uci_amazon", "uci_yelp")
CALIBRATION_SETS = ("sst2_train", "uci_imdb")
LABEL_NAMES = ("negative", "positive")


@dataclass(frozen=True)
class SentimentSet:
    name: str
    texts: list[str]
    labels: list[int]  # index into LABEL_NAMES


def load_sentiment(name: str, max_examples: int | None = None, seed: int = 0) -> SentimentSet:
    """All rows, or a fixed random sample of `max_examples` rows (same seed, same sample)."""
    if name not in VALIDATION_SETS + CALIBRATION_SETS:
        raise DataError(f"unknown sentiment dataset {name!r}")
    rows = read_tsv(data_root() / "sentiment" / f"{name}.tsv")
    if max_examples is not None and max_examples < len(rows):
        rows = random.Random(seed).sample(rows, max_examples)
    try:
        labels = [int(row["label"]) for row in rows]
    except (KeyError, ValueError) as exc:
        raise DataError(f"{name}: a label is not 0/1: {exc}") from exc
    if any(label not in (0, 1) for label in labels):
        raise DataError(f"{name}: labels must be 0 or 1")
    return SentimentSet(name, [row["text"] for row in rows], labels)


def calibration_texts(name: str, count: int, seed: int = 0) -> list[str]:
    """Texts for static-quantization calibration: only from training-side sets, never validation data."""
    if name not in CALIBRATION_SETS:
        raise DataError(f"calibration must use a training set {CALIBRATION_SETS}, not {name!r}")
    return load_sentiment(name, max_examples=count, seed=seed).texts
