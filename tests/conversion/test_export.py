from pathlib import Path
from typing import Any

import numpy as np
import onnx

from conversion.export import export_onnx
from conversion.runners import ort_session, tokenize

from .conftest import TEXTS


def test_graph_has_the_manifest_contract_names_and_dynamic_axes(sentiment_graphs: dict[str, Path]) -> None:
    model = onnx.load(str(sentiment_graphs["fp32"]))
    assert model.opset_import[0].version == 17
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in model.graph.output] == ["logits"]
    for graph_input in model.graph.input:
        assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = [d.dim_param for d in graph_input.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"]


def test_bi_encoder_pools_and_normalises_inside_the_graph(loaded_embedder: Any, tmp_path: Path) -> None:
    path = export_onnx(
        loaded_embedder.module, tmp_path / "e.onnx", vocab_size=loaded_embedder.config["vocab_size"]
    )
    session = ort_session(path)
    assert [o.name for o in session.get_outputs()] == ["embeddings"]
    # Batch and length other than the export's dummy (2 x 8): the axes really are dynamic.
    batch = tokenize(loaded_embedder.tokenizer, TEXTS[:3], 64, loaded_embedder.module.input_names)
    (embeddings,) = session.run(None, batch)
    assert embeddings.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # Padding must not change a text's embedding (mean pooling honours the attention mask).
    alone = session.run(
        None, tokenize(loaded_embedder.tokenizer, TEXTS[:1], 64, loaded_embedder.module.input_names)
    )
    np.testing.assert_allclose(alone[0][0], embeddings[0], atol=1e-5)
