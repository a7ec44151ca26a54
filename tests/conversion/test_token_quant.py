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
from conversion.token_quant import quantize_columns, quantize_per_token_int8

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
    assert counts["QuantizeLinear"] == QUANTIZED_ACTIVATIONS
    weights = onnx.load(str(per_token)).graph.initializer
    assert not any(
        w.data_type == onnx.TensorProto.FLOAT and len(w.dims) == 2 and w.dims[0] > 8 for w in weights
    )


def test_per_token_int8_stays_close_to_the_checkpoint(loaded_sentiment: Any, per_token: Path) -> None:
    report = check_parity(loaded_sentiment, per_token, TEXTS, max_length=64, atol=1.0, raise_on_failure=False)
    assert report.cosine_min > 0.99


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
