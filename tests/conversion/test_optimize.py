from pathlib import Path
from typing import Any

from conversion.optimize import fusion_report, op_counts, optimize_onnx


def test_fuses_attention_and_layer_norms_per_layer(sentiment_graphs: dict[str, Path]) -> None:
    before = op_counts(sentiment_graphs["fp32"])
    fused = fusion_report(sentiment_graphs["optimized"])
    assert before.get("Attention", 0) == 0
    assert fused["Attention"] == 2  # one per encoder layer
    assert fused["EmbedLayerNormalization"] == 1
    assert fused["SkipLayerNormalization"] == 4  # two per layer
    assert op_counts(sentiment_graphs["optimized"]).get("Softmax", 0) == 0


def test_detects_heads_from_the_graph_when_not_given(
    sentiment_graphs: dict[str, Path], tmp_path: Path
) -> None:
    counts = optimize_onnx(sentiment_graphs["fp32"], tmp_path / "auto.onnx")
    assert counts["Attention"] == 2


def test_optimized_graph_keeps_its_interface(
    sentiment_graphs: dict[str, Path], loaded_sentiment: Any
) -> None:
    from conversion.runners import ort_session

    session = ort_session(sentiment_graphs["optimized"])
    assert [i.name for i in session.get_inputs()] == loaded_sentiment.module.input_names
    assert [o.name for o in session.get_outputs()] == ["logits"]
