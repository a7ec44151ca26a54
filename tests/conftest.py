"""Session-wide fixtures: tiny random BERT checkpoints and a model store built from them by the pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

KINDS = ("sequence-classification", "bi-encoder", "cross-encoder")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{model kind: checkpoint dir} of 2-layer, hidden-32 BERTs (safetensors + real WordPiece tokenizer)."""
    from conversion.tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny-checkpoints")
    return {kind: make_tiny_checkpoint(root / kind, kind, seed=0) for kind in KINDS}  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoints: dict[str, Path]) -> Path:
    """A model store root holding version 1 of `review-sentiment` (labels negative/positive),
    `product-embedder` (bi-encoder), `product-recommender` (the same bi-encoder with a recency-weighted user
    tower) and `product-reranker` (cross-encoder), int8, built by the pipeline.

    Treat it as read-only (session-scoped); copy it (shutil.copytree) to modify it.
    """
    from conversion.pipeline import build
    from conversion.recipe import parse_recipe
    from conversion.tiny import tiny_recipe_data

    store = tmp_path_factory.mktemp("tiny-store")
    for kind in KINDS:
        recipe = parse_recipe(tiny_recipe_data(kind, tiny_checkpoints[kind]))  # type: ignore[arg-type]
        build(recipe, store, quiet=True)
    recommender = tiny_recipe_data("bi-encoder", tiny_checkpoints["bi-encoder"], name="product-recommender")
    build(parse_recipe({**recommender, "user_tower": {"recency_half_life": 2.0}}), store, quiet=True)
    return store
