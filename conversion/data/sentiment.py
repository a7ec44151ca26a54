"""Sentiment TSVs (`text<TAB>label`, 1 = positive); validation sets are never trained, distilled or
calibrated on.

The training side is a `TrainingMix`: how many texts to draw from each training set, with the classes
balanced within each set (the Amazon files are 70-93% positive; a model trained on them as they are leans
positive on the balanced validation sets).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from conversion.data import DataError, data_root, read_tsv

ValidationSet = Literal["sst2_validation", "uci_amazon", "uci_yelp", "amazon_multidomain_validation"]
TrainingSet = Literal["sst2_train", "amazon_multidomain_train", "amazon_earphones", "amazon_sandisk"]
CalibrationSet = Literal["sst2_train", "uci_imdb"]
VALIDATION_SETS: tuple[str, ...] = get_args(ValidationSet)
TRAINING_SETS: tuple[str, ...] = get_args(TrainingSet)
CALIBRATION_SETS: tuple[str, ...] = get_args(CalibrationSet)
LABEL_NAMES = ("negative", "positive")


@dataclass(frozen=True)
class SentimentSet:
    name: str
    texts: list[str]
    labels: list[int]  # index into LABEL_NAMES

    def class_counts(self) -> list[int]:
        return [self.labels.count(c) for c in range(len(LABEL_NAMES))]


def load_sentiment(name: str, max_examples: int | None = None, seed: int = 0) -> SentimentSet:
    """All rows, or a fixed random sample of `max_examples` rows (same seed, same sample)."""
    if name not in {*VALIDATION_SETS, *TRAINING_SETS, *CALIBRATION_SETS}:
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


def refuse_validation_set(path: Path) -> Path:
    """`path`, unless it is one of the validation sets (by file name): those are never trained on."""
    if path.stem in VALIDATION_SETS:
        raise DataError(f"{path}: {path.stem} is a validation set; never train or distil on it")
    return path


def calibration_texts(name: str, count: int, seed: int = 0) -> list[str]:
    """Texts for static-quantization calibration: only from training-side sets, never validation data."""
    if name not in CALIBRATION_SETS:
        raise DataError(f"calibration must use a training set {CALIBRATION_SETS}, not {name!r}")
    return load_sentiment(name, max_examples=count, seed=seed).texts


class TrainingMix(BaseModel):
    """Texts drawn from the training sets: at most `sets[name]` from each, half of them per class when
    `balance_classes` (a set short of one class gives as many of the other), shuffled together."""

    model_config = ConfigDict(extra="forbid")

    sets: dict[TrainingSet, int] = Field(min_length=1)
    balance_classes: bool = True
    seed: int = 0

    def describe(self) -> str:
        balance = ", classes balanced per set" if self.balance_classes else ""
        return " + ".join(f"{n} {name}" for name, n in self.sets.items()) + balance

    def files(self) -> list[str]:
        return [f"{name}.tsv" for name in self.sets]


def _balanced(data: SentimentSet, count: int, rng: random.Random) -> list[int]:
    by_class = [[i for i, label in enumerate(data.labels) if label == c] for c in range(len(LABEL_NAMES))]
    per_class = min(count // len(by_class), *(len(rows) for rows in by_class))
    return [i for rows in by_class for i in rng.sample(rows, per_class)]


def load_training_mix(mix: TrainingMix) -> SentimentSet:
    """The mix's texts and labels, shuffled (same mix and seed, same texts in the same order)."""
    rng = random.Random(mix.seed)
    texts: list[str] = []
    labels: list[int] = []
    for name, count in mix.sets.items():
        data = load_sentiment(name)
        if mix.balance_classes:
            chosen = _balanced(data, count, rng)
        else:
            chosen = rng.sample(range(len(data.texts)), min(count, len(data.texts)))
        texts.extend(data.texts[i] for i in chosen)
        labels.extend(data.labels[i] for i in chosen)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return SentimentSet("+".join(mix.sets), [texts[i] for i in order], [labels[i] for i in order])
