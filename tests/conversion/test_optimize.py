from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from conversion.optimize import fusion_report, op_counts, optimize_onnx, unfuse_skip_layernorm


def test_fuses_attention_and_layer_norms_per_layer(sentiment_graphs: dict[str, Path]) -> None:
    before = op_counts(sentiment_graphs["fp32"])
    fused = fusion_report(sentiment_graphs["optimized"])
    assert before.get("Attention", 0) == 0
    # One per encoder layer but the last, which runs for the [CLS] row only
    # (conversion.modeling.cls_row_only): its one-query attention stays unfused.
    assert fused["Attention"] == 1
    assert fused["EmbedLayerNormalization"] == 1
    assert fused["SkipLayerNormalization"] == 4  # two per layer
    assert op_counts(sentiment_graphs["optimized"]).get("Softmax", 0) == 1


def test_detects_heads_from_the_graph_when_not_given(
    sentiment_graphs: dict[str, Path], tmp_path: Path
) -> None:
    counts = optimize_onnx(sentiment_graphs["fp32"], tmp_path / "auto.onnx")
    assert counts["Attention"] == 1  # the [CLS]-only last layer is not fused


def test_optimized_graph_keeps_its_interface(
    sentiment_graphs: dict[str, Path], loaded_sentiment: Any
) -> None:
    from conversion.runners import ort_session

    session = ort_session(sentiment_graphs["optimized"])
    assert [i.name for i in session.get_inputs()] == loaded_sentiment.module.input_names
    assert [o.name for o in session.get_outputs()] == ["logits"]


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0])


def test_cpu_targets_get_add_and_layernorm_instead_of_skip_layernorm(
    sentiment_graphs: dict[str, Path], tmp_path: Path
) -> None:
    fused = op_counts(sentiment_graphs["optimized"])
    counts = optimize_onnx(
        sentiment_graphs["fp32"],
        tmp_path / "cpu.onnx",
        num_heads=4,
        hidden_size=32,
        unfuse_skip_layernorms=True,
    )
    assert counts["SkipLayerNormalization"] == 0
    assert counts["Attention"] == 1
    assert (
        counts["LayerNormalization"] == fused.get("LayerNormalization", 0) + fused["SkipLayerNormalization"]
    )
    ids = np.random.default_rng(0).integers(1, 100, size=(3, 12), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    np.testing.assert_allclose(
        _run(onnx.load(str(tmp_path / "cpu.onnx")), feeds),
        _run(onnx.load(str(sentiment_graphs["optimized"])), feeds),
        atol=1e-5,
    )


def test_unfusing_leaves_nodes_whose_statistics_are_used() -> None:
    h = 4
    node = helper.make_node("SkipLayerNormalization", ["x", "s", "g"], ["y", "mean"], domain="com.microsoft")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, h]) for n in ("x", "s")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "mean")],
        [numpy_helper.from_array(np.ones(h, np.float32), "g")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    assert unfuse_skip_layernorm(model) == 0
    assert [n.op_type for n in model.graph.node] == ["SkipLayerNormalization"]


def test_unfusing_with_bias_matches_the_fused_kernel() -> None:
    rng = np.random.default_rng(1)
    h = 8
    weights = {n: rng.normal(size=h).astype(np.float32) for n in ("g", "b", "bias")}
    node = helper.make_node(
        "SkipLayerNormalization", ["x", "s", "g", "b", "bias"], ["y"], domain="com.microsoft", epsilon=1e-5
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, h]) for n in ("x", "s")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, n) for n, v in weights.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        ir_version=8,
    )
    feeds = {n: rng.normal(size=(3, h)).astype(np.float32) for n in ("x", "s")}
    expected = _run(model, feeds)
    assert unfuse_skip_layernorm(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Add", "Add", "LayerNormalization"]
    np.testing.assert_allclose(_run(model, feeds), expected, atol=1e-5)
