"""The machine's limit for a transformer: matrix-multiply peaks of this CPU, and a model's operations.

- `measure_peak`: int8 (MatMulInteger, u8 x s8 -> s32, the kernel under the project's per-token int8
  MatMulIntegerToFloat) and fp32 (MatMul) throughput of onnxruntime on large square matrices, at a given
  thread count.
- `count_ops`: multiply-accumulate work per sequence, read from the ONNX graph: every matrix product with
  a weight (MatMul, Gemm, MatMulInteger(ToFloat), QAttention/Attention projections, QDQ MatMuls), plus the
  attention products QK^T and AV (4 * seq^2 * attention width per layer), split by the precision they run in.
- `roofline_rate`: the sequences/s that the peaks allow for that work (int8 and fp32 parts each at
  their own peak).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INT8_WEIGHT_OPS = {"MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
FP_WEIGHT_OPS = {"MatMul", "Gemm", "FusedMatMul"}
ATTENTION_OPS = {"Attention": "fp32", "QAttention": "int8", "MultiHeadAttention": "fp32"}


@dataclass
class OpCount:
    """Operations (2 per multiply-accumulate) per sequence, by the precision they run in."""

    int8: float = 0.0
    fp32: float = 0.0
    by_op: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.int8 + self.fp32

    def add(self, precision: str, op: str, ops: float) -> None:
        if precision == "int8":
            self.int8 += ops
        else:
            self.fp32 += ops
        self.by_op[op] = self.by_op.get(op, 0.0) + ops


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.initializers = {init.name: tuple(init.dims) for init in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        for node in graph.node:  # Constant nodes hold weights too
            if node.op_type == "Constant" and node.output:
                value = _attr(node, "value")
                if value is not None:
                    self.initializers[node.output[0]] = tuple(value.dims)

    def weight(self, name: str) -> tuple[tuple[int, ...], bool] | None:
        """Shape of a constant weight behind `name` and whether it is int8 (through DequantizeLinear)."""
        if name in self.initializers:
            return self.initializers[name], False
        node = self.producer.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in self.initializers:
            return self.initializers[node.input[0]], True
        if node is not None and node.op_type == "Transpose" and node.input[0] in self.initializers:
            return tuple(reversed(self.initializers[node.input[0]])), False
        return None

    def from_quantized_activation(self, name: str) -> bool:
        node = self.producer.get(name)
        return node is not None and node.op_type in ("DequantizeLinear", "QuantizeLinear")


def _attention_width(graph: _Graph, node: onnx.NodeProto) -> tuple[int, int]:
    """(qk width, v width) of a fused attention node: the sum over heads of the head sizes."""
    sizes = _attr(node, "qkv_hidden_sizes")
    if sizes:
        return int(sizes[0]), int(sizes[2])
    weight = graph.weight(node.input[1]) if len(node.input) > 1 else None
    if weight is not None and len(weight[0]) == 2:
        return weight[0][1] // 3, weight[0][1] // 3
    raise ValueError(f"cannot read the attention width of node {node.name!r}")


def count_ops(
    model: onnx.ModelProto, seq_len: int, *, activation_shapes: dict[str, list[int]] | None = None
) -> OpCount:
    """Matrix-product operations for ONE sequence of `seq_len` tokens.

    With `activation_shapes` (from `infer_activation_shapes`), products of two activations (unfused
    attention: QK^T and AV) are counted and heads that see only the pooled token are counted once; without
    them every weight multiplies `seq_len` rows and only fused attention nodes give QK^T and AV.
    """
    graph = _Graph(model)
    count = OpCount()
    shapes = activation_shapes or {}

    def rows(name: str) -> float:
        """Rows a weight multiplies: every token, or fewer after pooling (a classifier head on [CLS])."""
        shape = shapes.get(name)
        return float(np.prod(shape[:-1])) if shape and len(shape) >= 2 else float(seq_len)

    for node in model.graph.node:
        op = node.op_type
        if op in ATTENTION_OPS:
            weight = graph.weight(node.input[1])
            if weight is None:
                # MultiHeadAttention fed by separate projections (counted alone): only QK^T and AV here,
                # from the widths of q and v when their shapes are known.
                q_shape = shapes.get(node.input[0])
                v_shape = shapes.get(node.input[2] if len(node.input) > 2 else "")
                if q_shape and v_shape:
                    widths = q_shape[-1] + v_shape[-1]
                    count.add("fp32", "attention QK^T+AV", 2.0 * seq_len * seq_len * widths)
                continue
            k, n = weight[0][0], weight[0][-1]
            count.add(ATTENTION_OPS[op], f"{op} projection", 2.0 * rows(node.input[0]) * k * n)
            qk, v = _attention_width(graph, node)
            count.add("fp32", "attention QK^T+AV", 2.0 * seq_len * seq_len * (qk + v))
            continue
        if op not in INT8_WEIGHT_OPS and op not in FP_WEIGHT_OPS:
            continue
        b_index = 3 if op == "QLinearMatMul" else 1
        a_name = node.input[0]
        weight = graph.weight(node.input[b_index]) if len(node.input) > b_index else None
        if weight is None:
            a_shape, b_shape = shapes.get(node.input[0]), shapes.get(node.input[1])
            if a_shape and b_shape and len(a_shape) >= 2 and len(b_shape) >= 2:
                batch = float(np.prod(a_shape[:-2])) if len(a_shape) > 2 else 1.0
                ops = 2.0 * batch * a_shape[-2] * a_shape[-1] * b_shape[-1]
                count.add("fp32", "attention QK^T+AV", ops)
            continue
        shape, dequantized = weight
        if op == "Gemm" and _attr(node, "transB", 0):
            shape = tuple(reversed(shape))
        if len(shape) < 2:
            continue
        k, n = shape[-2], shape[-1]
        int8 = op in INT8_WEIGHT_OPS or (dequantized and graph.from_quantized_activation(node.input[0]))
        rows_a = rows(a_name)
        if op == "Gemm" and _attr(node, "transA", 0):
            rows_a = float(shapes[a_name][-1]) if a_name in shapes else rows_a
        label = op + (" (QDQ)" if dequantized else "")
        count.add("int8" if int8 else "fp32", label, 2.0 * rows_a * k * n)
    return count


def infer_activation_shapes(model: onnx.ModelProto, seq_len: int) -> dict[str, list[int]]:
    """Concrete shapes of every tensor for one sequence, by running the graph on CPU once.

    Shape inference alone cannot follow the Shape->Gather->Concat->Reshape chains of exported BERTs, so
    the graph is run with every intermediate tensor exposed as an output.
    """
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    counted = FP_WEIGHT_OPS | INT8_WEIGHT_OPS | set(ATTENTION_OPS)
    initializers = {init.name for init in probe.graph.initializer}
    for node in probe.graph.node:
        if node.op_type in counted:
            for name in node.input[:3] if node.op_type in ATTENTION_OPS else node.input[:2]:
                if name in initializers:
                    continue
                if name and name not in known:
                    probe.graph.output.append(helper.make_empty_tensor_value_info(name))
                    known.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = dummy_inputs([i.name for i in session.get_inputs()], 1, seq_len, vocab=vocab_size(model))
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, feeds)
    return {name: list(np.asarray(value).shape) for name, value in zip(names, values, strict=True)}


def has_fused_attention(model: onnx.ModelProto) -> bool:
    return any(node.op_type in ATTENTION_OPS for node in model.graph.node)


def vocab_size(model: onnx.ModelProto) -> int | None:
    """Rows of the word-embedding table that `input_ids` indexes, if the graph shows it."""
    initializers = {init.name: tuple(init.dims) for init in model.graph.initializer}
    ids = {"input_ids"}
    for node in model.graph.node:
        if node.op_type in ("Cast", "Identity") and node.input and node.input[0] in ids:
            ids.update(node.output)  # fused graphs cast the ids to int32 first
            continue
        if not ids.intersection(node.input):
            continue
        table = node.input[0] if node.op_type == "Gather" else (node.input[2] if len(node.input) > 2 else "")
        if initializers.get(table):
            return int(initializers[table][0])
    return None


def dummy_inputs(
    names: list[str], batch: int, seq_len: int, seed: int = 0, vocab: int | None = None
) -> dict[str, np.ndarray]:
    """Token ids of a full (unpadded) batch, as a tokenizer would give them (ordinary word ids)."""
    rng = np.random.default_rng(seed)
    high = min(29000, vocab) if vocab else 29000
    feeds = {
        "input_ids": rng.integers(min(1000, high // 2), high, size=(batch, seq_len), dtype=np.int64),
        "attention_mask": np.ones((batch, seq_len), dtype=np.int64),
        "token_type_ids": np.zeros((batch, seq_len), dtype=np.int64),
    }
    missing = [n for n in names if n not in feeds]
    if missing:
        raise ValueError(f"unknown model inputs {missing}")
    return {name: feeds[name] for name in names}


def roofline_rate(count: OpCount, int8_peak: float, fp32_peak: float) -> float:
    """Sequences/s if every int8 op ran at `int8_peak` and every fp32 op at `fp32_peak` (ops/s)."""
    seconds = count.int8 / int8_peak + count.fp32 / fp32_peak
    return 1.0 / seconds if seconds > 0 else float("inf")


def matmul_model(precision: str, n: int, seed: int = 0) -> onnx.ModelProto:
    """A one-node graph: A[n,n] (input) times B[n,n] (weight), in fp32 or u8 x s8 -> s32."""
    rng = np.random.default_rng(seed)
    if precision == "fp32":
        weight = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    elif precision == "int8":
        weight = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        raise ValueError(f"precision must be fp32 or int8, got {precision!r}")
    graph = helper.make_graph(
        [node],
        f"matmul_{precision}",
        [helper.make_tensor_value_info("A", a_type, [n, n])],
        [helper.make_tensor_value_info("Y", y_type, [n, n])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _session(model: onnx.ModelProto, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _matmul_input(precision: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    if precision == "fp32":
        return rng.standard_normal((n, n)).astype(np.float32)
    return rng.integers(0, 256, (n, n), dtype=np.uint8)


def measure_peak(
    precision: str, threads: int = 1, *, n: int = 1024, seconds: float = 2.0, sessions: int = 1
) -> float:
    """Sustained ops/s (2n^3 per product, median run) of `sessions` sessions of `threads` threads each,
    running side by side in their own Python threads (onnxruntime releases the GIL)."""
    model = matmul_model(precision, n)
    workers = [_session(model, threads) for _ in range(sessions)]
    a = _matmul_input(precision, n)
    for session in workers:
        session.run(None, {"A": a})
    samples: list[list[float]] = [[] for _ in workers]

    def loop(index: int) -> None:
        session, out = workers[index], samples[index]
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(out) < 3:
            start = time.perf_counter()
            session.run(None, {"A": a})
            out.append(time.perf_counter() - start)

    threads_ = [threading.Thread(target=loop, args=(i,)) for i in range(sessions)]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    return sum(2.0 * n**3 / statistics.median(s) for s in samples)
