from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from conversion.optimize import op_counts
from conversion.parity import check_parity
from conversion.quantize import TextCalibrationReader, apply_precision, initializer_dtypes, io_dtypes
from conversion.recipe import QuantizeConfig

from .conftest import TEXTS


def _scales(path: Path) -> list[tuple[int, ...]]:
    model = onnx.load(str(path))
    return [tuple(i.dims) for i in model.graph.initializer if i.name.endswith("_scale")]


@pytest.mark.parametrize("per_channel", [True, False])
def test_dynamic_int8_quantizes_every_projection_per_token(
    sentiment_graphs: dict[str, Path], tmp_path: Path, per_channel: bool
) -> None:
    out = apply_precision(
        QuantizeConfig(method="dynamic", per_channel=per_channel),
        sentiment_graphs["optimized"],
        tmp_path / "q.onnx",
    )
    counts = op_counts(out)
    # 2 layers: Q, K, V (the fused Attention's), attention output, FFN-in, FFN-out; pooler, classifier.
    assert counts.get("MatMulIntegerToFloat", 0) == 2 * 6 + 2
    assert counts.get("MatMul", 0) == 2  # only the [CLS] query's QK^T and AV (between activations)
    assert counts.get("DynamicQuantizeLinear", 0) == 0  # no scale shared by a whole batch
    assert initializer_dtypes(out).get(onnx.TensorProto.INT8, 0) > 0
    channel_scales = [s for s in _scales(out) if s and s[0] > 1]
    assert bool(channel_scales) is per_channel
    assert out.stat().st_size < sentiment_graphs["optimized"].stat().st_size


def test_static_qdq_is_calibrated_on_texts(
    loaded_sentiment: Any, sentiment_graphs: dict[str, Path], tmp_path: Path
) -> None:
    reader = TextCalibrationReader(
        loaded_sentiment.tokenizer,
        TEXTS * 3,
        max_length=64,
        input_names=loaded_sentiment.module.input_names,
        batch_size=4,
    )
    out = apply_precision(
        QuantizeConfig(method="static"), sentiment_graphs["fp32"], tmp_path / "s.onnx", reader
    )
    counts = op_counts(out)
    assert counts.get("QuantizeLinear", 0) >= 12  # activations of every MatMul of both layers
    assert counts.get("DequantizeLinear", 0) > counts.get("QuantizeLinear", 0)
    report = check_parity(loaded_sentiment, out, TEXTS, max_length=64, atol=1.0, raise_on_failure=False)
    assert report.cosine_min > 0.9


def test_fp16_keeps_fp32_inputs_and_outputs(
    loaded_sentiment: Any, sentiment_graphs: dict[str, Path], tmp_path: Path
) -> None:
    out = apply_precision(QuantizeConfig(method="fp16"), sentiment_graphs["optimized"], tmp_path / "h.onnx")
    dtypes = initializer_dtypes(out)
    assert dtypes.get(onnx.TensorProto.FLOAT16, 0) > 0
    assert dtypes.get(onnx.TensorProto.FLOAT, 0) == 0
    assert io_dtypes(out) == {
        "input_ids": onnx.TensorProto.INT64,
        "attention_mask": onnx.TensorProto.INT64,
        "token_type_ids": onnx.TensorProto.INT64,
        "logits": onnx.TensorProto.FLOAT,
    }
    # It also runs on the CPU provider here, close to fp32.
    report = check_parity(loaded_sentiment, out, TEXTS, max_length=64, atol=1e-2)
    assert report.passed


def test_none_copies_the_graph(sentiment_graphs: dict[str, Path], tmp_path: Path) -> None:
    out = apply_precision(QuantizeConfig(method="none"), sentiment_graphs["optimized"], tmp_path / "n.onnx")
    assert out.read_bytes() == sentiment_graphs["optimized"].read_bytes()


def test_static_without_reader_is_an_error(sentiment_graphs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration"):
        apply_precision(QuantizeConfig(method="static"), sentiment_graphs["fp32"], tmp_path / "x.onnx")


def test_reader_yields_batches_then_none(loaded_sentiment: Any) -> None:
    reader = TextCalibrationReader(
        loaded_sentiment.tokenizer,
        TEXTS,
        max_length=64,
        input_names=loaded_sentiment.module.input_names,
        batch_size=4,
    )
    first = reader.get_next()
    assert first is not None
    assert first["input_ids"].dtype == np.int64
    assert first["input_ids"].shape[0] == 4
    assert reader.get_next() is not None
    assert reader.get_next() is None
    reader.rewind()
    assert reader.get_next() is not None


def test_excluded_nodes_stay_fp32(sentiment_graphs: dict[str, Path], tmp_path: Path) -> None:
    config = QuantizeConfig(method="dynamic", exclude_nodes=[r"layer\.1/output/dense/MatMul"])
    out = apply_precision(config, sentiment_graphs["optimized"], tmp_path / "mixed.onnx")
    graph = onnx.load(str(out)).graph
    weights = {init.name for init in graph.initializer}
    matmuls = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    assert matmuls == ["/model/bert/encoder/layer.1/output/dense/MatMul"]
    assert op_counts(out)["MatMulIntegerToFloat"] == 2 * 6 + 2 - 1
