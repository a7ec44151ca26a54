"""Per-token int8: every projection int8, close to fp32, and a text's output independent of its batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from conversion.optimize import op_counts
from conversion.parity import check_parity
from conversion.runners import ort_session, tokenize
from conversion.token_quant import BLOCKED_QUANTIZE_OPSET, quantize_columns, quantize_per_token_int8

from .conftest import TEXTS

# 2 layers: Q, K and V (layer 0's from its fused Attention), attention output, FFN in, FFN out; pooler,
# classifier. The last layer's Q reads the [CLS] row alone (conversion.modeling.cls_only_logits), so it has a
# quantized input of its own; elsewhere Q, K and V share one.
PROJECTIONS = 2 * 6 + 2
QUANTIZED_ACTIVATIONS = 2 * 4 + 2 + 1


@pytest.fixture(scope="module")
def per_token(sentiment_graphs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("token-quant") / "int8.onnx"
    return quantize_per_token_int8(sentiment_graphs["optimized"], out)


def test_every_projection_runs_int8_with_attention_kept_fused(per_token: Path) -> None:
    counts = op_counts(per_token)
    assert counts.get("MatMulIntegerToFloat", 0) == PROJECTIONS
    assert counts.get("MultiHeadAttention", 0) == 1  # layer 0's Attention
    assert counts.get("MatMul", 0) == 2  # the [CLS] query's QK^T and AV, between activations
    for fp32_op in ("Gemm", "Attention", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"):
        assert counts.get(fp32_op, 0) == 0, fp32_op
    graph = onnx.load(str(per_token)).graph
    blocked = [n for n in graph.node if n.op_type == "QuantizeLinear" and _attribute(n, "block_size")]
    assert len(blocked) == QUANTIZED_ACTIVATIONS
    weights = graph.initializer
    assert not any(
        w.data_type == onnx.TensorProto.FLOAT and len(w.dims) == 2 and w.dims[0] > 8 for w in weights
    )


def test_per_token_int8_stays_close_to_the_checkpoint(loaded_sentiment: Any, per_token: Path) -> None:
    report = check_parity(loaded_sentiment, per_token, TEXTS, max_length=64, atol=1.0, raise_on_failure=False)
    assert report.cosine_min > 0.99


def _attribute(node: onnx.NodeProto, name: str) -> Any:
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _one_projection(path: Path, weight: np.ndarray) -> Path:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "tokens", weight.shape[0]])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"], name="projection")],
        "projection",
        [x],
        [y],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


def test_each_row_is_quantized_with_its_own_scale_and_an_all_zero_row_gives_zeros(tmp_path: Path) -> None:
    """The arithmetic, against numpy: row r of x becomes round(x_r / s_r) + 128 with s_r = max|x_r| / 127,
    the integer product is scaled by s_r and the weight column's scale. An opset-17 graph is converted to the
    opset of the blocked QuantizeLinear that does it."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((48, 16)).astype(np.float32)
    x = (rng.standard_normal((3, 5, 48)) * rng.uniform(0.01, 40.0, (3, 5, 1))).astype(np.float32)
    x[1, 2] = 0.0
    out = quantize_per_token_int8(_one_projection(tmp_path / "fp32.onnx", weight), tmp_path / "int8.onnx")
    model = onnx.load(str(out))
    assert next(o.version for o in model.opset_import if o.domain == "") == BLOCKED_QUANTIZE_OPSET
    got = np.asarray(ort_session(out).run(None, {"x": x})[0])

    w_q, w_scale = quantize_columns(weight)
    row_scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.float32(1e-12)) * np.float32(1 / 127)
    x_q = np.clip(np.rint(x / row_scale), -128, 127).astype(np.int64)
    expected = (x_q @ w_q.astype(np.int64)).astype(np.float32) * row_scale * w_scale
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[1, 2], np.zeros(16, dtype=np.float32))


def _logits(session: Any, loaded: Any, texts: list[str]) -> np.ndarray:
    batch = tokenize(loaded.tokenizer, texts, 64, loaded.module.input_names)
    return np.asarray(session.run(None, batch)[0])


def test_a_texts_output_does_not_depend_on_its_batch(loaded_sentiment: Any, per_token: Path) -> None:
    """The reason for per-token scales: with one scale per batch (onnxruntime's dynamic quantization) a long
    or extreme text in the same batch changes every other text's result."""
    session = ort_session(per_token)
    text = "Does exactly what it says. Would buy again."
    alone = _logits(session, loaded_sentiment, [text])[0]
    loud = "WORST!!! " * 20 + "😀" * 40
    for company in ([loud, text], [text, "Ok"], [text, *TEXTS]):
        together = _logits(session, loaded_sentiment, company)[company.index(text)]
        np.testing.assert_allclose(together, alone, atol=2e-6)


@pytest.mark.parametrize("per_channel", [True, False])
def test_weights_are_symmetric_int8_per_column_or_per_tensor(per_channel: bool) -> None:
    weight = np.array([[1.0, -0.5, 0.0], [-2.0, 0.25, 0.0]], dtype=np.float32)
    quantized, scale = quantize_columns(weight, per_channel=per_channel)
    assert quantized.dtype == np.int8
    if per_channel:
        np.testing.assert_allclose(scale, [2.0 / 127, 0.5 / 127, 1.0], rtol=1e-6)  # all-zero column: 1
        assert quantized[1, 0] == -127
        assert quantized[0, 1] == -127
    else:
        np.testing.assert_allclose(scale, [2.0 / 127], rtol=1e-6)
    np.testing.assert_allclose(quantized * scale, weight, atol=float(scale.max()) / 2 + 1e-7)
