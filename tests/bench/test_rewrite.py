"""The LayerNorm rewrite on a tiny fused BERT: same outputs, no SkipLayerNormalization, store-ready copy."""

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bench.rewrite import unfuse_skip_layernorm
from bench.roofline import dummy_inputs, vocab_size


@pytest.fixture(scope="module")
def fused(tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conversion.checkpoint import load_checkpoint
    from conversion.export import export_onnx
    from conversion.optimize import optimize_onnx

    loaded = load_checkpoint(tiny_checkpoints["sequence-classification"], "sequence-classification")
    root = tmp_path_factory.mktemp("rewrite")
    raw = export_onnx(loaded.module, root / "raw.onnx", vocab_size=loaded.config["vocab_size"])
    optimize_onnx(raw, root / "fused.onnx", num_heads=4, hidden_size=32)
    return root / "fused.onnx"


def outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return np.asarray(session.run(None, {n: feeds[n] for n in names})[0])


def test_rewrite_replaces_every_skip_layernorm_and_keeps_the_outputs(fused: Path) -> None:
    model = onnx.load(str(fused))
    before = sum(n.op_type == "SkipLayerNormalization" for n in model.graph.node)
    assert before > 0
    feeds = dummy_inputs(["input_ids", "attention_mask", "token_type_ids"], 3, 12, vocab=vocab_size(model))
    expected = outputs(model, feeds)
    assert unfuse_skip_layernorm(model) == before
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert "SkipLayerNormalization" not in ops
    assert ops.count("LayerNormalization") == before
    np.testing.assert_allclose(outputs(model, feeds), expected, atol=1e-5)


def test_rewrite_leaves_nodes_whose_statistics_are_used() -> None:
    from onnx import TensorProto, helper, numpy_helper

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


def test_rewritten_copy_is_a_verifiable_store_version(tiny_store: Path, tmp_path: Path) -> None:
    from bench.prepare_store import rewrite_copy
    from bench.variants import read_artifacts

    source = next(a for a in read_artifacts(tiny_store) if a.name == "review-sentiment")
    path, replaced = rewrite_copy(source, tmp_path / "built")
    assert replaced > 0
    assert path == tmp_path / "built" / "review-sentiment" / "1"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["version"] == "1"
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == digest
    (copy,) = read_artifacts(tmp_path / "built")
    assert copy.rewritten
    assert copy.precision == "int8"
