from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conversion.checkpoint import load_checkpoint
from conversion.errors import ParityError
from conversion.export import export_onnx
from conversion.parity import check_parity, compare
from conversion.tiny import make_tiny_checkpoint

from .conftest import TEXTS


def test_exported_graph_matches_pytorch(loaded_sentiment: Any, sentiment_graphs: dict[str, Path]) -> None:
    for graph in sentiment_graphs.values():
        report = check_parity(loaded_sentiment, graph, TEXTS, max_length=64, atol=1e-4, batch_size=4)
        assert report.passed
        assert report.texts == len(TEXTS)
        assert report.max_abs_diff < 1e-4
        assert report.cosine_min > 0.9999


def test_a_different_model_fails_parity(loaded_sentiment: Any, tmp_path: Path) -> None:
    other = load_checkpoint(
        make_tiny_checkpoint(tmp_path / "other", "sequence-classification", seed=1), "sequence-classification"
    )
    graph = export_onnx(other.module, tmp_path / "other.onnx", vocab_size=other.config["vocab_size"])
    with pytest.raises(ParityError, match="exceeds atol"):
        check_parity(loaded_sentiment, graph, TEXTS, max_length=64, atol=1e-4)
    report = check_parity(loaded_sentiment, graph, TEXTS, max_length=64, atol=1e-4, raise_on_failure=False)
    assert not report.passed


def test_compare_reports_worst_difference() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    report = compare(ref, ref + np.array([[0.0, 0.5], [0.0, 0.0]]), atol=0.1)
    assert report.max_abs_diff == pytest.approx(0.5)
    assert report.cosine_min == pytest.approx(1 / 1.25**0.5)  # [1, 0] vs [1, 0.5]
    assert report.cosine_mean == pytest.approx((1 + 1 / 1.25**0.5) / 2)
    assert not report.passed
