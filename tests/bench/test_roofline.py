"""Operation counting on tiny BERTs (hidden 32, 2 layers, 4 heads, FFN 64) against the closed form."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bench.roofline import (
    OpCount,
    count_ops,
    dummy_inputs,
    infer_activation_shapes,
    matmul_model,
    measure_peak,
    roofline_rate,
    vocab_size,
)

H, LAYERS, FFN, LABELS = 32, 2, 64, 2


def expected_ops(seq: int) -> tuple[float, float, float]:
    """(linear layers, attention QK^T + AV, pooler + classifier on the [CLS] row). The last layer runs for
    the [CLS] row only (conversion.modeling.cls_only_logits): K and V over every token, Q, the attention
    output and the FFN over one row, and one query's attention."""
    linear = 2.0 * seq * (LAYERS - 1) * (4 * H * H + 2 * H * FFN)
    linear += 2.0 * seq * 2 * H * H + 2.0 * (2 * H * H + 2 * H * FFN)
    attention = (LAYERS - 1) * 4.0 * seq * seq * H + 4.0 * seq * H
    head = 2.0 * (H * H + H * LABELS)
    return linear, attention, head


@pytest.fixture(scope="module")
def graphs(tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from conversion.checkpoint import load_checkpoint
    from conversion.export import export_onnx
    from conversion.optimize import optimize_onnx
    from conversion.token_quant import quantize_per_token_int8

    loaded = load_checkpoint(tiny_checkpoints["sequence-classification"], "sequence-classification")
    root = tmp_path_factory.mktemp("roofline-graphs")
    raw = export_onnx(loaded.module, root / "raw.onnx", vocab_size=loaded.config["vocab_size"])
    fused = root / "fused.onnx"
    optimize_onnx(raw, fused, num_heads=4, hidden_size=H)
    int8 = quantize_per_token_int8(fused, root / "int8.onnx")
    return {"raw": raw, "fused": fused, "int8": int8}


@pytest.mark.parametrize("seq", [16, 40])
@pytest.mark.parametrize("graph", ["raw", "fused", "int8"])
def test_count_matches_closed_form(graphs: dict[str, Path], graph: str, seq: int) -> None:
    model = onnx.load(str(graphs[graph]))
    count = count_ops(model, seq, activation_shapes=infer_activation_shapes(model, seq))
    assert count.total > 0
    linear, attention, head = expected_ops(seq)
    assert count.total == pytest.approx(linear + attention + head)
    if graph == "int8":
        assert count.int8 >= linear  # every encoder weight runs as int8 ...
        assert count.fp32 >= attention  # ... attention's QK^T and AV stay fp32
    else:
        assert count.int8 == 0


def test_fused_graph_gets_attention_from_its_nodes_without_shapes(graphs: dict[str, Path]) -> None:
    model = onnx.load(str(graphs["fused"]))
    assert any(node.op_type == "Attention" for node in model.graph.node)
    count = count_ops(model, 16)
    # Without shapes only the fused layers count: every layer but the [CLS]-only last one.
    assert count.by_op["attention QK^T+AV"] == pytest.approx((LAYERS - 1) * 4.0 * 16 * 16 * H)


def test_roofline_rate_splits_work_by_precision() -> None:
    count = OpCount()
    count.add("int8", "MatMulInteger", 4e9)
    count.add("fp32", "attention", 1e9)
    # 4e9 at 1e12 (4 ms) + 1e9 at 2.5e11 (4 ms) = 8 ms per sequence
    assert roofline_rate(count, 1e12, 2.5e11) == pytest.approx(125.0)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_peak_graphs_compute_the_product(precision: str) -> None:
    n = 64
    model = matmul_model(precision, n)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    weight = onnx.numpy_helper.to_array(model.graph.initializer[0])
    rng = np.random.default_rng(0)
    a = (
        rng.standard_normal((n, n)).astype(np.float32)
        if precision == "fp32"
        else rng.integers(0, 256, (n, n), dtype=np.uint8)
    )
    (out,) = session.run(None, {"A": a})
    expected = a.astype(np.float64) @ weight.astype(np.float64)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-3)
    assert measure_peak(precision, 1, n=n, seconds=0.05) > 0


def test_matmul_model_refuses_other_precisions() -> None:
    with pytest.raises(ValueError, match="fp32 or int8"):
        matmul_model("fp16", 8)


def test_dummy_inputs_are_unpadded_token_batches() -> None:
    feeds = dummy_inputs(["input_ids", "attention_mask"], 3, 7)
    assert feeds["input_ids"].shape == (3, 7)
    assert feeds["input_ids"].dtype == np.int64
    assert feeds["attention_mask"].all()
    with pytest.raises(ValueError, match="unknown model inputs"):
        dummy_inputs(["pixel_values"], 1, 1)


def test_vocab_size_is_read_from_the_embedding_table(graphs: dict[str, Path]) -> None:
    from conversion.tiny import _vocab

    for graph in ("raw", "fused", "int8"):
        assert vocab_size(onnx.load(str(graphs[graph]))) == len(_vocab())
