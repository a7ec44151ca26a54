"""Int8 with activations quantized per token, so that a text's answer does not depend on the batch it ran in.

onnxruntime's dynamic quantization (DynamicQuantizeLinear, DynamicQuantizeMatMul, QAttention) takes one scale
per tensor from the whole padded batch: the company a text keeps in a micro-batch (a long review, 4,096 emoji,
the padding they bring) moved the served student's score of "Does exactly what it says. Would buy again." by
0.03 and flipped its label. Here every token row gets its own scale (symmetric, |x|max / 127, stored as
uint8 with zero point 128 for the U8S8 VNNI kernels), weights stay int8 per output channel, and the integer
matrix multiply is onnxruntime's MatMulIntegerToFloat. A row's result then depends on that row alone, up to
float rounding; attention never mixes in padded keys (masked), so a text's answer is the one it gets alone.

Fused `Attention` nodes (fp32 weights inside) become three quantized projections (Q, K, V) and the
MultiHeadAttention kernel. Embedding tables are quantized by onnxruntime's own pass (weights only: no
activation scale involved).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

MS_DOMAIN = "com.microsoft"
# Weights-only quantization of embedding tables (QEmbedLayerNormalization, Gather on int8).
EMBEDDING_OPS = ["EmbedLayerNormalization", "Gather"]
# Fused graphs (Attention, SkipLayerNormalization, ...) carry outputs without inferred types.
EXTRA_OPTIONS = {"DefaultTensorType": TensorProto.FLOAT}
# QuantizeLinear with a block size (one scale per row along the last axis) first appears in opset 21.
BLOCKED_QUANTIZE_OPSET = 21


def quantize_per_token_int8(
    in_path: Path, out_path: Path, *, per_channel: bool = True, exclude: Sequence[str] = ()
) -> Path:
    """Every MatMul and Gemm with a constant 2-D weight and every fused Attention, except the nodes named in
    `exclude`, becomes per-token int8 (weights per output channel, or one scale per weight); embedding tables
    become int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="token-quant-") as tmp:
        staged = Path(tmp) / "embeddings-int8.onnx"
        quantize_dynamic(
            str(in_path),
            str(staged),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=EMBEDDING_OPS,
            nodes_to_exclude=list(exclude),
            extra_options=EXTRA_OPTIONS,
        )
        model = onnx.load(str(staged))
    if _default_opset(model) < BLOCKED_QUANTIZE_OPSET:
        model = version_converter.convert_version(model, BLOCKED_QUANTIZE_OPSET)
    TokenQuantizer(model, per_channel=per_channel, exclude=exclude).rewrite()
    onnx.save(model, str(out_path))
    return out_path


class TokenQuantizer:
    """Rewrites one graph in place. One quantized copy of each activation is shared by every projection that
    reads it (Q, K and V read the same LayerNorm output)."""

    def __init__(
        self, model: onnx.ModelProto, *, per_channel: bool = True, exclude: Sequence[str] = ()
    ) -> None:
        self.model = model
        self.per_channel = per_channel
        self.graph = model.graph
        self.exclude = set(exclude)
        self.weights = {init.name: init for init in self.graph.initializer}
        if _default_opset(model) < BLOCKED_QUANTIZE_OPSET:
            raise ValueError(
                f"per-token int8 needs ONNX opset >= {BLOCKED_QUANTIZE_OPSET} (blocked QuantizeLinear)"
            )
        self._quantized: dict[str, tuple[str, str]] = {}
        # Shared constants; _drop_unused_initializers removes those a graph ends up not reading.
        self._new_inits: list[onnx.TensorProto] = [
            numpy_helper.from_array(np.array(128, dtype=np.uint8), "token_quant/zero_point"),
            # Far above any row scale: a scale quantized with it rounds to 0, so comes out as the zero point.
            numpy_helper.from_array(np.array(1e30, dtype=np.float32), "token_quant/above_any_scale"),
            numpy_helper.from_array(np.array(0, dtype=np.int8), "token_quant/weight_zero_point"),
            numpy_helper.from_array(np.array(1.0 / 127.0, dtype=np.float32), "token_quant/inv127"),
            numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "token_quant/tiny"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "token_quant/last_axis"),
        ]

    def rewrite(self) -> None:
        nodes: list[onnx.NodeProto] = []
        for node in self.graph.node:
            if node.name in self.exclude:
                nodes.append(node)
            elif (
                node.op_type == "MatMul"
                and node.domain in ("", "ai.onnx")
                and self._constant_2d(node.input[1])
            ):
                nodes.extend(self._matmul(node))
            elif node.op_type == "Gemm" and self._plain_gemm(node):
                nodes.extend(self._gemm(node))
            elif node.op_type == "Attention" and node.domain == MS_DOMAIN:
                nodes.extend(self._attention(node))
            else:
                nodes.append(node)
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        self.graph.initializer.extend(self._new_inits)
        self._drop_unused_initializers()
        if not any(o.domain == MS_DOMAIN for o in self.model.opset_import):
            self.model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))

    def _constant_2d(self, name: str) -> bool:
        init = self.weights.get(name)
        return init is not None and len(init.dims) == 2 and init.data_type == TensorProto.FLOAT

    def _matmul(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        weight = numpy_helper.to_array(self.weights[node.input[1]])
        return self._projection(node.input[0], weight, node.output[0], node.name or node.output[0])

    def _plain_gemm(self, node: onnx.NodeProto) -> bool:
        """Y = X @ B (or B transposed) + C, with constant B and C (a Linear over [batch, features])."""
        attrs = _attributes(node)
        scaled = attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0
        plain = not scaled and not attrs.get("transA", 0)
        bias = node.input[2] if len(node.input) > 2 else ""
        return plain and self._constant_2d(node.input[1]) and (not bias or bias in self.weights)

    def _gemm(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        weight = numpy_helper.to_array(self.weights[node.input[1]])
        if _attributes(node).get("transB", 0):
            weight = weight.T
        base = node.name or node.output[0]
        bias = node.input[2] if len(node.input) > 2 else ""
        if not bias:
            return self._projection(node.input[0], weight, node.output[0], base)
        projected = f"{base}/projected"
        nodes = self._projection(node.input[0], weight, projected, base)
        nodes.append(helper.make_node("Add", [projected, bias], [node.output[0]], name=f"{base}/bias"))
        return nodes

    def _projection(self, x: str, weight: np.ndarray, out: str, base: str) -> list[onnx.NodeProto]:
        """x [..., K] @ weight [K, N] with x quantized per row and weight per column."""
        nodes, x_q, x_scale = self._quantize_rows(x, width=weight.shape[0])
        w_q, w_scale = quantize_columns(weight, per_channel=self.per_channel)
        w_q_name, w_scale_name = f"{base}/w_int8", f"{base}/w_scale"
        self._new_inits += [
            numpy_helper.from_array(w_q, w_q_name),
            numpy_helper.from_array(w_scale, w_scale_name),
        ]
        # A scale of shape [..., rows, 1] as A's scale: onnxruntime multiplies each output row by it.
        nodes.append(
            helper.make_node(
                "MatMulIntegerToFloat",
                [
                    x_q,
                    w_q_name,
                    x_scale,
                    w_scale_name,
                    "token_quant/zero_point",
                    "token_quant/weight_zero_point",
                ],
                [out],
                name=f"{base}/int8",
                domain=MS_DOMAIN,
            )
        )
        return nodes

    def _quantize_rows(self, x: str, width: int) -> tuple[list[onnx.NodeProto], str, str]:
        """Nodes (none when `x` was already quantized) and the names of x's uint8 copy and row scales.

        The rows of x [..., width] are one block each of a blocked QuantizeLinear: round(x / row scale) + 128
        in one pass, where a Div and a per-tensor QuantizeLinear took two. The bytes are the same; the served
        student runs 3-5% faster at 1-8 x 16-64 tokens. Its zero point has the scales' shape, [..., 1]."""
        if x in self._quantized:
            return [], *self._quantized[x]
        base = f"token_quant/{len(self._quantized)}"
        absmax, scale, x_q = f"{base}/absmax", f"{base}/scale", f"{base}/uint8"
        nodes = [
            helper.make_node("Abs", [x], [f"{base}/abs"], name=f"{base}/Abs"),
            helper.make_node("ReduceMax", [f"{base}/abs", "token_quant/last_axis"], [absmax], keepdims=1),
            # An all-zero row would divide by zero: its scale is tiny instead and it quantizes to zeros.
            helper.make_node("Max", [absmax, "token_quant/tiny"], [f"{base}/absmax_safe"]),
            helper.make_node("Mul", [f"{base}/absmax_safe", "token_quant/inv127"], [scale]),
            helper.make_node(
                "QuantizeLinear",
                [scale, "token_quant/above_any_scale", "token_quant/zero_point"],
                [f"{base}/zero_points"],
                name=f"{base}/zero_points",
            ),
            helper.make_node(
                "QuantizeLinear",
                [x, scale, f"{base}/zero_points"],
                [x_q],
                name=f"{base}/QuantizeLinear",
                axis=-1,
                block_size=width,
            ),
        ]
        self._quantized[x] = (x_q, scale)
        return nodes, x_q, scale

    def _attention(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """Attention(x, W_qkv, b_qkv, mask_index) -> quantized x @ W_q, x @ W_k, x @ W_v and
        MultiHeadAttention(q, k, v, b_qkv, key_padding_mask): the same computation with the projections in
        int8."""
        inputs = list(node.input) + [""] * 4
        x, weight_name, bias, mask = inputs[:4]
        if any(inputs[4:]) or not self._constant_2d(weight_name):
            raise ValueError(f"{node.name}: only Attention(input, weights, bias, mask_index) is supported")
        attrs = _attributes(node)
        if attrs.get("unidirectional", 0) or attrs.get("do_rotary", 0):
            raise ValueError(f"{node.name}: unidirectional or rotary attention is not supported")
        weight = numpy_helper.to_array(self.weights[weight_name])
        width = weight.shape[1]
        sizes = [int(s) for s in attrs.get("qkv_hidden_sizes", [width // 3] * 3)]
        base = node.name or node.output[0]
        # Three projections that share x's quantized copy: cheaper than one [K, 3D] product and a Split, which
        # copies its whole output once more (4% of a run of the embedder at 8 x 64 tokens).
        nodes: list[onnx.NodeProto] = []
        q, k, v = (f"{base}/{part}" for part in "qkv")
        bounds = np.cumsum([0, *sizes])
        for part, out, start, stop in zip("qkv", (q, k, v), bounds[:-1], bounds[1:], strict=True):
            nodes += self._projection(x, weight[:, start:stop], out, f"{base}/{part}_proj")
        mha_attrs = {"num_heads": attrs["num_heads"]}
        for name in ("mask_filter_value", "scale"):
            if name in attrs:
                mha_attrs[name] = attrs[name]
        nodes.append(
            helper.make_node(
                "MultiHeadAttention",
                [q, k, v, bias, mask],
                [node.output[0]],
                name=f"{base}/mha",
                domain=MS_DOMAIN,
                **mha_attrs,
            )
        )
        return nodes

    def _drop_unused_initializers(self) -> None:
        used = {name for node in self.graph.node for name in node.input}
        used |= {o.name for o in self.graph.output}
        kept = [init for init in self.graph.initializer if init.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)


def _default_opset(model: onnx.ModelProto) -> int:
    return int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def quantize_columns(weight: np.ndarray, *, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8: (int8 weight, fp32 scale per output column, or one for the whole weight)."""
    scale = np.abs(weight).max(axis=0 if per_channel else None, keepdims=not per_channel) / 127.0
    scale = scale.reshape(-1)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    quantized = np.clip(np.round(weight / scale), -127, 127).astype(np.int8)
    return quantized, scale
