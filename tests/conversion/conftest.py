"""Fixtures shared by the conversion step tests: loaded tiny checkpoints and their exported graphs."""

from pathlib import Path
from typing import Any

import pytest

TEXTS = [
    "Ok",
    "Thanks!",
    "The battery died after two days and the charger broke too.",
    "great coffee table for a small kitchen",
    "worst movie",
    "I love this phone, the sound is excellent and the screen is perfect for movies at night.",
]


@pytest.fixture(scope="session")
def loaded_sentiment(tiny_checkpoints: dict[str, Path]) -> Any:
    from conversion.checkpoint import load_checkpoint

    return load_checkpoint(tiny_checkpoints["sequence-classification"], "sequence-classification")


@pytest.fixture(scope="session")
def loaded_embedder(tiny_checkpoints: dict[str, Path]) -> Any:
    from conversion.checkpoint import load_checkpoint

    return load_checkpoint(tiny_checkpoints["bi-encoder"], "bi-encoder")


@pytest.fixture(scope="session")
def sentiment_graphs(loaded_sentiment: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"fp32": exported graph, "optimized": fused graph} of the tiny sentiment model."""
    from conversion.export import export_onnx
    from conversion.optimize import optimize_onnx

    root = tmp_path_factory.mktemp("sentiment-graphs")
    fp32 = export_onnx(
        loaded_sentiment.module, root / "fp32.onnx", vocab_size=loaded_sentiment.config["vocab_size"]
    )
    optimized = root / "optimized.onnx"
    optimize_onnx(fp32, optimized, num_heads=4, hidden_size=32)
    return {"fp32": fp32, "optimized": optimized}
