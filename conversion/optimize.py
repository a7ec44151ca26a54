"""onnxruntime's transformer fusions (Attention, SkipLayerNormalization, EmbedLayerNormalization, ...), and
for the CPU provider one un-fusion found by profiling.

onnxruntime 1.31's CPU SkipLayerNormalization kernel costs ~7 ns per element on this project's CPUs (AVX-512
VNNI), against ~1.1 ns for Add + LayerNormalization (ONNX opset 17) over the same [tokens, 384] tensors: in a
fused int8 MiniLM it was ~30% of a run at batch 8 x 16 tokens. CPU artifacts therefore get Add +
LayerNormalization back after the other fusions (exact up to float rounding); CUDA artifacts keep the fused
op.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import onnx
from onnx import helper

FUSED_OPS = (
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "EmbedLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "LayerNormalization",
)


def op_counts(path: Path) -> dict[str, int]:
    model = onnx.load(str(path), load_external_data=False)
    return dict(Counter(node.op_type for node in model.graph.node))


def fusion_report(path: Path) -> dict[str, int]:
    counts = op_counts(path)
    return {op: counts.get(op, 0) for op in FUSED_OPS}


def optimize_onnx(
    in_path: Path,
    out_path: Path,
    *,
    num_heads: int = 0,
    hidden_size: int = 0,
    unfuse_skip_layernorms: bool = False,
) -> dict[str, int]:
    """Fuses a BERT-like graph; heads/hidden 0 lets the optimizer read them from the graph (pruned models).
    `unfuse_skip_layernorms` (CPU targets) then turns SkipLayerNormalization into Add + LayerNormalization.

    Returns the count of each fused op in the result, for the manifest.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    # The fusion modules log as top-level modules (onnxruntime adds their folder to sys.path). With heads
    # pruned, fusion_attention warns that the attention width (e.g. 288) differs from q/k/v's input (384):
    # expected, and the pipeline's parity check of the fused graph is what proves the fusion right.
    for name in ("onnxruntime.transformers", "fusion_attention"):
        logging.getLogger(name).setLevel(logging.ERROR)
    optimized = optimize_model(
        str(in_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
    )
    if unfuse_skip_layernorms:
        unfuse_skip_layernorm(optimized.model)
    optimized.save_model_to_file(str(out_path))
    return fusion_report(out_path)


def unfuse_skip_layernorm(model: onnx.ModelProto) -> int:
    """Replaces every SkipLayerNormalization whose mean/inv-std outputs are unused by Add (+ bias Add) +
    LayerNormalization, in place; returns how many were replaced."""
    graph = model.graph
    consumed = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    new_nodes: list[onnx.NodeProto] = []
    replaced = 0
    for node in graph.node:
        outputs = list(node.output) + [""] * (4 - len(node.output))
        if (
            node.op_type != "SkipLayerNormalization"
            or node.domain != "com.microsoft"
            or any(out and out in consumed for out in outputs[1:3])
        ):
            new_nodes.append(node)
            continue
        new_nodes.extend(_add_and_layernorm(node, outputs))
        replaced += 1
    if replaced and not any(o.domain in ("", "ai.onnx") and o.version >= 17 for o in model.opset_import):
        raise ValueError("LayerNormalization needs ONNX opset >= 17")
    del graph.node[:]
    graph.node.extend(new_nodes)
    return replaced


def _add_and_layernorm(node: onnx.NodeProto, outputs: list[str]) -> list[onnx.NodeProto]:
    x, skip, gamma, beta, bias = (list(node.input) + [""] * 5)[:5]
    epsilon = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-12)
    base = node.name or outputs[0]
    summed = f"{base}/skip_sum"
    nodes = [helper.make_node("Add", [x, skip], [summed], name=f"{base}/add_skip")]
    if bias:
        with_bias = outputs[3] or f"{base}/skip_bias_sum"
        nodes.append(helper.make_node("Add", [summed, bias], [with_bias], name=f"{base}/add_bias"))
        summed = with_bias
    elif outputs[3]:
        nodes.append(helper.make_node("Identity", [summed], [outputs[3]], name=f"{base}/sum_out"))
    nodes.append(
        helper.make_node(
            "LayerNormalization",
            [summed, gamma] + ([beta] if beta else []),
            [outputs[0]],
            name=f"{base}/layernorm",
            axis=-1,
            epsilon=epsilon,
        )
    )
    return nodes
