"""onnxruntime's transformer fusions (Attention, SkipLayerNormalization, EmbedLayerNormalization, ...)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import onnx

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
    in_path: Path, out_path: Path, *, num_heads: int = 0, hidden_size: int = 0
) -> dict[str, int]:
    """Fuses a BERT-like graph; heads/hidden 0 lets the optimizer read them from the graph (pruned models).

    Returns the count of each fused op in the result, for the manifest.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    optimized = optimize_model(
        str(in_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
    )
    optimized.save_model_to_file(str(out_path))
    return fusion_report(out_path)
